"""The model code MLflow logs with the assistant ("models from code"): the logged model holds
this file instead of a pickled object, and loading it runs `set_model` below."""
from mlflow.models import set_model

from pipelines.serving.assistant_model import ClinicalAssistant

set_model(ClinicalAssistant())
