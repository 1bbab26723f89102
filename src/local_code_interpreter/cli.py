"""Command line: the service modes (DevUI, interactive, demo) and the `exec` and `doctor` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from . import __version__
from .sandbox import BACKENDS, LANGUAGES, TIMEOUT_EXIT_CODE, SandboxUnavailable, create_sandbox, report_all
from .settings import ENV, ConfigError, Settings, load
from .terminal import escape_controls

EXIT_CONFIG = 2


def _sandbox_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sandbox", choices=list(BACKENDS), help=f"sandbox back end [{ENV['sandbox']}; subprocess]")
    parser.add_argument("--timeout", type=str, help=f"seconds per execution [{ENV['timeout']}; 10]")
    parser.add_argument("--memory-mb", type=str, help=f"address space per execution [{ENV['memory_mb']}; 512]")
    parser.add_argument("--max-output-bytes", type=str, help=f"per stream [{ENV['max_output_bytes']}; 65536]")
    parser.add_argument("--scratch-mb", type=str, help=f"largest file the code may write [{ENV['scratch_mb']}; 64]")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def service_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="local-code-interpreter",
        description="A code interpreter agent. Subcommands without a model: `exec FILE|-`, `doctor`.",
        epilog="Every option can also come from the environment variable in brackets.")
    parser.add_argument("--version", action="version", version=__version__)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--devui", action="store_true", help="serve the DevUI web page and /v1/responses")
    modes.add_argument("--interactive", action="store_true", help="chat in the terminal")
    parser.add_argument("--host", help=f"bind address [{ENV['host']}; 127.0.0.1]")
    parser.add_argument("--port", type=str, help=f"[{ENV['port']}; 8090]")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser with --devui")
    parser.add_argument("--mode", choices=["developer", "user"], help=f"DevUI mode [{ENV['mode']}; developer]")
    parser.add_argument("--hyperlight", nargs="?", const="python", choices=list(LANGUAGES),
                        help=f"use the Hyperlight sandbox with this guest language [{ENV['hyperlight']}]")
    parser.add_argument("--max-concurrency", type=str, help=f"executions at once [{ENV['max_concurrency']}; 4]")
    _sandbox_options(parser)
    return parser


def exec_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="local-code-interpreter exec", description=(
        "Run code once in the sandbox. The exit status is the code's own (124 on timeout)."))
    parser.add_argument("file", help="a file with the code, or - for standard input")
    parser.add_argument("--language", choices=list(LANGUAGES), default="python")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the raw output")
    _sandbox_options(parser)
    return parser


def doctor_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="local-code-interpreter doctor",
                                     description="What is configured and usable on this host.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _flags(args: argparse.Namespace) -> dict:
    keys = ("host", "port", "mode", "sandbox", "hyperlight", "timeout", "memory_mb", "max_output_bytes",
            "scratch_mb", "max_concurrency", "language")
    flags = {key: getattr(args, key, None) for key in keys}
    if getattr(args, "verbose", False):
        flags["log_level"] = "DEBUG"
    return flags


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in ("exec", "doctor") else None
    parser = {"exec": exec_parser, "doctor": doctor_parser}.get(command, service_parser)()
    args = parser.parse_args(argv[1:] if command else argv)
    try:
        settings = load(_flags(args))
    except ConfigError as error:
        print(f"local-code-interpreter: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    from .logs import configure

    configure(settings.log_level, settings.serving.log_format)
    try:
        if command == "exec":
            return run_exec(args, settings)
        if command == "doctor":
            return run_doctor(args, settings)
        return run_service(args, settings)
    except ConfigError as error:
        print(f"local-code-interpreter: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def run_exec(args: argparse.Namespace, settings: Settings) -> int:
    try:
        code = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as error:
        print(f"local-code-interpreter exec: cannot read {args.file}: {error}", file=sys.stderr)
        return EXIT_CONFIG

    async def once():
        sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, 1)
        try:
            return await sandbox.run(code, settings.language)
        finally:
            await sandbox.close()

    try:
        result = asyncio.run(once())
    except SandboxUnavailable as error:
        print(f"local-code-interpreter exec: the {settings.sandbox} sandbox is unavailable: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        for stream, text in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
            stream.write(escape_controls(text) if stream.isatty() else text)
    return TIMEOUT_EXIT_CODE if result.timed_out else result.exit_code


def run_doctor(args: argparse.Namespace, settings: Settings) -> int:
    reports = report_all(settings.limits)
    if args.json:
        print(json.dumps({"model": settings.model.describe(), "sandbox": settings.sandbox,
                          "sessions": dataclasses.asdict(settings.sessions), "disk_budget_mb": settings.disk_budget_mb,
                          "backends": [r.to_dict() for r in reports]}, indent=2))
        return 0
    print(f"model:   {settings.model.describe()}")
    print(f"sandbox: {settings.sandbox} (selected)")
    s = settings.sessions
    budget = (f"; disk budget {settings.disk_budget_mb} MiB (LCI_DISK_BUDGET_MB) holds them all at their quotas"
              if settings.disk_budget_mb else "")
    print(f"sessions: at most {s.max_sessions} live, idle expiry {s.idle_seconds:g} s, memory {s.memory_mb} MiB and "
          f"disk {s.disk_mb} MiB each, uploads up to {s.max_upload_mb} MiB{budget}")
    for report in reports:
        print(f"\n{report.name}: {'usable' if report.usable else 'NOT usable'} - {report.detail}")
        if report.languages:
            print(f"  languages: {', '.join(report.languages)}")
        for layer in report.layers:
            print(f"  [{'x' if layer.active else ' '}] {layer.name}: {layer.detail}")
    return 0


def run_service(args: argparse.Namespace, settings: Settings) -> int:
    from . import chat, server

    if args.devui:
        server.run(settings, open_browser=not args.no_browser)
        return 0
    return asyncio.run(chat.run(settings, interactive=args.interactive))
