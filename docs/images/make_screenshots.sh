#!/usr/bin/env bash
# Refresh README's screenshots from an MLflow store, with headless Chromium (no downloads):
#   docs/images/report.png          the top of an analysis run's HTML report (report/report.html)
#   docs/images/mlflow-compare.png  the MLflow UI's compare-runs page for a few fine-tune runs
#
# Usage: docs/images/make_screenshots.sh TRACKING_URI [--study NAME] [--runs ID,ID,...]
#                                        [--analysis-run ID] [--max-runs N] [--out DIR]
#   e.g. docs/images/make_screenshots.sh sqlite:////tmp/study/mlflow.db --study demo
#
# Runs (default): the first --max-runs (4) role=finetune runs of experiment clinical-slm in start
# order, those of --study only when given; the report: that of the newest role=analysis run with a
# report/report.html artifact (of --study when given). A SQLite store is copied first and the
# server reads the copy, so the store itself is never touched. The server (mlflow server on
# 127.0.0.1, a free port) is stopped on exit. Environment: PYTHON (default .venv/bin/python),
# CHROME (default: chromium, chromium-browser or google-chrome on PATH), EXPERIMENT (clinical-slm).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CHROME="${CHROME:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
[[ $# -ge 1 && $1 != -* ]] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ -n $CHROME ]] || { echo "no chromium, chromium-browser or google-chrome on PATH (set CHROME)" >&2; exit 2; }
URI="$1"; shift
OUT="$ROOT/docs/images"
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --study|--runs|--analysis-run|--max-runs) ARGS+=("$1" "$2"); shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ $URI == sqlite:///* ]]; then  # serve a consistent copy: the store is only read
  DB="${URI#sqlite:///}"
  [[ -f $DB ]] || { echo "no such SQLite store: $DB" >&2; exit 2; }
  "$PY" -c 'import sqlite3, sys; s = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True); d = sqlite3.connect(sys.argv[2]); s.backup(d); d.close()' \
    "$DB" "$WORK/store.db"
  URI="sqlite:///$WORK/store.db"
fi

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# its own process group (setsid), so that cleanup stops the server and its uvicorn worker together
setsid "$PY" -m mlflow server --backend-store-uri "$URI" --host 127.0.0.1 --port "$PORT" --workers 1 \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 120); do
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$PORT/health" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 1
done

MLFLOW_TRACKING_URI="$URI" "$PY" - "$CHROME" "$PORT" "$WORK" "$OUT" "${ARGS[@]}" <<'PYEOF'
"""Pick the runs, then drive Chromium over the DevTools protocol (--remote-debugging-pipe)."""
import argparse
import base64
import fcntl
import json
import os
import subprocess
import time
import urllib.parse

from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

WIDTH, HEIGHT = 1400, 1000

p = argparse.ArgumentParser()
p.add_argument("chrome")
p.add_argument("port")
p.add_argument("work")
p.add_argument("out")
p.add_argument("--study", default="")
p.add_argument("--runs", default="")
p.add_argument("--analysis-run", default="")
p.add_argument("--max-runs", type=int, default=4)
args = p.parse_args()

client = MlflowClient()
experiment = client.get_experiment_by_name(os.environ.get("EXPERIMENT", "clinical-slm"))
if experiment is None:
    raise SystemExit("no experiment " + os.environ.get("EXPERIMENT", "clinical-slm") + " in this store")
exp_id = experiment.experiment_id
study = f" and tags.study = '{args.study}'" if args.study else ""
if args.runs:
    runs = [client.get_run(r) for r in args.runs.split(",")]
else:
    runs = client.search_runs([exp_id], "tags.role = 'finetune'" + study, order_by=["attributes.start_time ASC"],
                              max_results=args.max_runs)
if len(runs) < 2:
    raise SystemExit(f"found {len(runs)} fine-tune run(s); the compare page needs 2 or more (use --runs)")
if args.analysis_run:
    analysis = client.get_run(args.analysis_run)
else:
    candidates = client.search_runs([exp_id], "tags.role = 'analysis'" + study,
                                    order_by=["attributes.start_time DESC"], max_results=50)
    analysis = next((r for r in candidates
                     if any(f.path == "report/report.html" for f in client.list_artifacts(r.info.run_id, "report"))),
                    None)
    if analysis is None:
        raise SystemExit("no analysis run with a report/report.html artifact (python -m dashboards logs one)")
report = download_artifacts(run_id=analysis.info.run_id, artifact_path="report", dst_path=args.work)
print("report of analysis run", analysis.info.run_id, "| compared:", ", ".join(r.info.run_name for r in runs))


class Browser:
    def __init__(self):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # the child's ends above fd 4, so that dup2 onto 3 and 4 never overwrites one of them
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_r, from_w))
        os.close(to_r)
        os.close(from_w)

        def pipe_fds():  # --remote-debugging-pipe: the browser reads fd 3 and writes fd 4
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.proc = subprocess.Popen(
            [args.chrome, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--hide-scrollbars", "--no-first-run", "--mute-audio", f"--user-data-dir={args.work}/profile",
             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            preexec_fn=pipe_fds, close_fds=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(child_r)
        os.close(child_w)
        self.out = os.fdopen(to_w, "wb", buffering=0)
        self.inp = os.fdopen(from_r, "rb", buffering=0)
        self.buf, self.last_id, self.session = b"", 0, None
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def call(self, method, **params):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.out.write(json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = self.inp.read(1 << 16)
                if not chunk:
                    raise RuntimeError("the browser closed the pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url, ready, timeout=90):
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while not self.js(f"document.readyState === 'complete' && !!({ready})"):
            if time.time() > deadline:
                raise TimeoutError(f"{url}: not rendered after {timeout} s ({ready})")
            time.sleep(0.5)
        time.sleep(1.5)  # let fonts, transitions and the last figures settle

    def save(self, path):
        raw = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        with open(path, "wb") as f:
            f.write(raw)
        try:  # 256 colors: a screenshot of text and flat plots loses nothing visible, and shrinks
            from PIL import Image

            with Image.open(path) as image:
                small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            small.save(path, optimize=True)
        except ImportError:
            pass
        print(f"{path}: {os.path.getsize(path) // 1024} KB")

    def close(self):
        try:
            self.call("Browser.close")
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


browser = Browser()
try:
    # the report: its top (title, selection, the leaderboard's headline bars), every figure drawn
    browser.open("file://" + urllib.parse.quote(os.path.join(report, "report.html")),
                 "document.querySelector('.js-plotly-plot .main-svg')")
    browser.save(os.path.join(args.out, "report.png"))

    # the compare page: assistant closed, plots folded, only the parameters that differ
    ids = [r.info.run_id for r in runs]
    url = (f"http://127.0.0.1:{args.port}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
           f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}")
    shown = " && ".join(f"document.body.innerText.includes('{r.info.run_name}')" for r in runs)
    browser.open(url, f"document.querySelector('[role=switch][aria-label=\"Parameters - Show diff only\"]') && {shown}")
    browser.js("""(() => {
      const click = (e) => e && e.click();
      click(document.querySelector('button[aria-label="Close"]'));
      click([...document.querySelectorAll('[role=button][aria-expanded=true]')]
              .find((e) => e.innerText.trim() === 'Visualizations'));
      click(document.querySelector('[role=switch][aria-label="Parameters - Show diff only"]'));
    })()""")
    time.sleep(1.5)
    browser.save(os.path.join(args.out, "mlflow-compare.png"))
finally:
    browser.close()
PYEOF
