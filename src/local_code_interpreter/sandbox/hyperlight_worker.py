"""One Hyperlight execution in its own process: `python -I hyperlight_worker.py < request.json`.

Run by `hyperlight.py` with a deadline, so a native call that hangs or a guest that never returns costs only this
process. The request is `{"code", "language", "heap_mb", "stack_mb"}`. The guest's output goes to this
process's stdout/stderr and its exit code becomes ours; a sandbox that cannot be built or started exits 1 with
`UNAVAILABLE` and the library's own error on stderr. Uses `hyperlight_nanvix` when installed, otherwise
`hyperlight_sandbox`.

`python -I hyperlight_worker.py --session` keeps one hyperlight-sandbox Sandbox for many executions (a session):
the first stdin line is `{"language", "heap_mb", "stack_mb"}`, answered `{"ready": true}` or `{"error": reason}`;
then each line `{"code"}` is answered with one line `{"stdout", "stderr", "exit_code"}`. Protocol lines go to the
original stdout; anything the native library prints goes to stderr.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import tempfile

UNAVAILABLE = "hyperlight sandbox unavailable: "


def _run_nanvix(code: str, language: str) -> int:
    """Nanvix micro-VM: runs a workload file; the guest writes straight to fd 1."""
    from hyperlight_nanvix import NanvixSandbox, SandboxConfig

    with tempfile.TemporaryDirectory(prefix="nanvix-") as scratch:
        workload = os.path.join(scratch, "main.py" if language == "python" else "main.js")
        with open(workload, "w", encoding="utf-8") as f:
            f.write(code)
        try:
            sandbox = NanvixSandbox(SandboxConfig(log_directory=scratch, tmp_directory=scratch))
        except Exception as exc:  # noqa: BLE001 - the runtime's own words are the reason
            sys.stderr.write(f"{UNAVAILABLE}{exc}\n")
            return 1
        result = asyncio.run(sandbox.run(workload))
    if result.success:
        return 0
    sys.stderr.write(f"{result.error}\n")
    return 1


def _run_wasm(code: str, language: str, heap_mb: int, stack_mb: int) -> int:
    """hyperlight-sandbox: the Wasm Python guest, or the HyperlightJS backend for JavaScript."""
    from hyperlight_sandbox import Sandbox

    try:
        sandbox = Sandbox(
            backend="wasm" if language == "python" else "hyperlight-js",
            heap_size=f"{heap_mb}Mi",
            stack_size=f"{stack_mb}Mi",
        )
        result = sandbox.run(code)
    except Exception as exc:  # noqa: BLE001 - guest errors come back in the result; this is the sandbox failing
        sys.stderr.write(f"{UNAVAILABLE}{exc}\n")
        return 1
    sys.stdout.buffer.write(result.stdout.encode("utf-8", "replace"))
    sys.stderr.buffer.write(result.stderr.encode("utf-8", "replace"))
    return result.exit_code if 0 <= result.exit_code < 256 else 1


def serve_session() -> int:
    """Keep one Sandbox and run each requested cell in it, until stdin closes (see the module docstring)."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray native output must not corrupt the protocol
    config = json.loads(sys.stdin.readline() or "{}")
    if importlib.util.find_spec("hyperlight_nanvix") is not None:
        reply = {"error": "hyperlight-nanvix runs each workload in a fresh micro-VM, so it keeps no session state"}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()
        return 1
    from hyperlight_sandbox import Sandbox

    try:
        sandbox = Sandbox(backend="wasm" if config["language"] == "python" else "hyperlight-js",
                          heap_size=f"{config['heap_mb']}Mi", stack_size=f"{config['stack_mb']}Mi")
        sandbox.run("pass" if config["language"] == "python" else "0;")  # build the VM now, not at the first cell
    except Exception as exc:  # noqa: BLE001 - the library's own words are the reason
        protocol.write(json.dumps({"error": f"{UNAVAILABLE}{exc}"}) + "\n")
        protocol.flush()
        return 1
    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = sandbox.run(request["code"])
            reply = {"stdout": result.stdout, "stderr": result.stderr, "exit_code": result.exit_code}
        except Exception as exc:  # noqa: BLE001 - reported as this cell's error; the session goes on
            reply = {"stdout": "", "stderr": f"{exc}\n", "exit_code": 1}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()
    return 0


def main() -> int:
    if sys.argv[1:] == ["--session"]:
        return serve_session()
    request = json.load(sys.stdin)
    if importlib.util.find_spec("hyperlight_nanvix") is not None:
        return _run_nanvix(request["code"], request["language"])
    return _run_wasm(request["code"], request["language"], request["heap_mb"], request["stack_mb"])


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown of the native runtime
