"""Client side of tests/test_hub_failures.py: one long-lived process (huggingface_hub is online here, unlike in
the pytest process) that runs ``hf_compress.hub.push_folder`` / ``pull_repo`` calls read from stdin.

Each stdin line is ``{"op": "push" | "pull", "kwargs": {...}}``; each answer is one stdout line:
``{"ok": true, "result": ...}`` or ``{"ok": false, "type": ..., "message": ..., "status": ..., "retryable": ...}``.
"""

import dataclasses
import json
import sys
import traceback

from hf_compress.hub import HubError, pull_repo, push_folder

OPS = {"push": push_folder, "pull": pull_repo}

for line in sys.stdin:
    request = json.loads(line)
    try:
        result = OPS[request["op"]](**request["kwargs"])
        answer = {"ok": True, "result": dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result}
    except HubError as err:
        answer = {"ok": False, "type": "HubError", "message": str(err), "status": err.status,
                  "retryable": err.retryable}
    except Exception as err:  # anything else is a bug the test should show in full
        answer = {"ok": False, "type": type(err).__name__, "message": traceback.format_exc()}
    print(json.dumps(answer), flush=True)
