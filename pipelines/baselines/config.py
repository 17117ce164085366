"""Typed configuration of a baseline: a chat model scored without fine-tuning on the test split."""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipelines.config import ConfigError, RunSettings, flat_params, parse_bool
from pipelines.tasks import PAPER_TASKS, task_tuple

PROMPTING_MODES = ("zero-shot", "prompt-engineered")


@dataclass
class BaselineConfig(RunSettings):
    """Everything that defines a baseline run.

    backend: `local` (a HF chat model in-process, e.g. the embedded smollm2-135m) or `openai`
    (any OpenAI-compatible endpoint: GPT-4o, a hospital's vLLM or llama.cpp server), or a
    non-neural baseline: `rules` (keyword and negation rules, labeling only) or `majority` (each
    task's most frequent training answer). These two run no model: `model` becomes their name.
    base_url: the endpoint's /v1 root (default $OPENAI_BASE_URL); the API key is read from the
    environment variable named by api_key_env. A non-local endpoint needs allow_remote.
    The test split is the one fine-tunes use: same data, split_seed and eval_limit.
    """

    model: str = "smollm2-135m"
    backend: str = "local"
    prompting: str = "zero-shot"
    tasks: tuple[str, ...] = PAPER_TASKS
    data: str = "synthetic"
    split_seed: int = 0
    eval_limit: int = 0
    max_new_tokens: int = 0  # cap on each task's generation budget; 0 = the task's own
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    allow_remote: bool = False
    concurrency: int = 4  # requests in flight at once (openai)
    max_retries: int = 5
    timeout_s: float = 60.0
    backoff_s: float = 1.0  # first retry wait when the server sends no Retry-After; doubles each time
    temperature: float = 0.0
    cache: str = "outputs/baseline-cache.sqlite"  # "" = no response cache
    prompts_dir: str = ""  # "" = the repository's prompts/ folder
    max_seq_length: int = 2048  # local backend: prompt token budget (a longer prompt loses its middle)
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        self.tasks = task_tuple(self.tasks)
        self.allow_remote = parse_bool(self.allow_remote, "allow-remote")
        if self.backend == "openai" and not self.base_url:
            self.base_url = os.environ.get("OPENAI_BASE_URL", "")
        self._resolve_modelless_backend()
        self._validate()

    def _resolve_modelless_backend(self) -> None:
        """A back end that declares `model_name` (rules, majority) fixes the model; one that declares
        `tasks` answers only those."""
        from pipelines.baselines.backends import BACKENDS

        factory = BACKENDS.get(self.backend)  # an unknown name lists the valid ones
        fixed = getattr(factory, "model_name", "")
        if fixed:
            if self.model not in (fixed, type(self).model):
                raise ConfigError(f"the {self.backend} backend runs no model; leave --model out "
                                  f"(got {self.model!r})")
            self.model = fixed
        supported = getattr(factory, "tasks", ())
        if supported and not set(self.tasks) <= set(supported):
            raise ConfigError(f"the {self.backend} backend answers only {', '.join(supported)}; "
                              f"pass --tasks {','.join(supported)} (got {','.join(self.tasks)})")

    def _validate(self) -> None:
        from pipelines.baselines.backends import BACKENDS

        BACKENDS.get(self.backend)  # an unknown name lists the valid ones
        self.check_run_settings()
        if self.prompting not in PROMPTING_MODES:
            raise ConfigError(f"--prompting must be one of {PROMPTING_MODES}, got {self.prompting!r}")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("the openai backend needs --base-url (or $OPENAI_BASE_URL), e.g. http://127.0.0.1"
                              ":8000/v1 for a local vLLM, https://api.openai.com/v1 for GPT-4o")
        if self.backend == "local" and self.temperature != 0:
            raise ConfigError("the local backend decodes greedily; leave --temperature at 0")
        for name in ("concurrency", "max_seq_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_limit", "max_new_tokens", "max_retries", "backoff_s", "temperature"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout-s must be > 0, got {self.timeout_s}")

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return flat_params(self)
