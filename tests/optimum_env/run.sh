#!/usr/bin/env bash
# Second test environment for the DCA-NAS ONNX export: transformers 4.57 + optimum-onnx (optimum's ONNX exporter,
# which does not support transformers 5 yet), so `main_export` / `optimum-cli export onnx` run with our
# DCANASOnnxConfig. Creates (or reuses) a virtual environment and runs tests/test_nas_export_optimum.py in it.
#
#   bash tests/optimum_env/run.sh                          # set up if needed, then run the tests
#   HFC_OPTIMUM_VENV=/path bash tests/optimum_env/run.sh   # venv location (default /tmp/hfc-optimum-venv)
#   HFC_OPTIMUM_REBUILD=1 bash tests/optimum_env/run.sh    # force a fresh venv
#
# torch is pinned to the CPU wheel that lies on this machine's disk (any other torch spec downloads a CUDA
# build); the repository is installed --no-deps on top, so its own transformers>=5 pin does not fight
# optimum-onnx's transformers<4.58. A venv is reused while tests/optimum_env/requirements.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
VENV="${HFC_OPTIMUM_VENV:-/tmp/hfc-optimum-venv}"
PYTHON="${PYTHON:-python3}"
REQS="$REPO/tests/optimum_env/requirements.txt"
STAMP="$VENV/.hfc-optimum-ready"
WANT="$( (cat "$REQS"; "$PYTHON" --version) | sha256sum | cut -c1-16)"

quiet_pip() {  # pip's notes about the local wheel indexes are noise here; keep real errors
    "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" \
        -e "Running pip as the 'root' user" -e "BuildBackendWarning" || true; }
    return "${PIPESTATUS[0]}"
}

start=$(date +%s)
if [[ "${HFC_OPTIMUM_REBUILD:-0}" == "1" || ! -f "$STAMP" || "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]]; then
    echo "[optimum-env] creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    quiet_pip --upgrade pip
    quiet_pip torch==2.13.0
    quiet_pip -r "$REQS"
    echo "$WANT" > "$STAMP"
fi
# the repository itself, every time (its path differs between checkouts); --no-deps keeps transformers 4.57
quiet_pip --no-deps -e "$REPO" > /dev/null
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import optimum.exporters.onnx  # noqa: F401  (fails here, not in the tests, when the venv is broken)
print("[optimum-env] " + ", ".join(f"{n} {md.version(n)}" for n in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime")))
PY
echo "[optimum-env] ready in $(( $(date +%s) - start )) s"

export PATH="$VENV/bin:$PATH"  # the venv's optimum-cli, whatever PATH said
export HF_HUB_OFFLINE=1
cd "$REPO"
set +e
"$VENV/bin/python" -m pytest tests/test_nas_export_optimum.py -q -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then  # "no tests ran": the environment is not what it should be
    echo "[optimum-env] no test ran" >&2
fi
exit $rc
