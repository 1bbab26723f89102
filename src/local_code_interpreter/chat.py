"""Terminal modes: the interactive chat and the default one-shot demo."""

from __future__ import annotations

import sys
import uuid

from .agent import build_agent
from .conversation import in_conversation
from .models import build_chat_client
from .sandbox import create_sandbox
from .sessions import SessionManager
from .settings import Settings

DEMO_PROMPT = """Compute the first ten prime numbers and their sum, using this code:
```python
primes = [n for n in range(2, 30) if all(n % d for d in range(2, n))][:10]
print(primes, sum(primes))
```"""


async def run(settings: Settings, interactive: bool) -> int:
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, settings.max_concurrency,
                             settings.queue_timeout_seconds, settings.queue_length)
    sessions = SessionManager(sandbox, settings)
    await sessions.start()
    agent = build_agent(build_chat_client(settings.model), sandbox, sessions)
    print(f"model: {settings.model.describe()}\nsandbox: {settings.sandbox}\n", file=sys.stderr)
    try:
        if not interactive:
            print(f"> {DEMO_PROMPT}\n")
            print((await agent.run(DEMO_PROMPT)).text)
            return 0
        session = agent.create_session()
        # One conversation for the whole run: the sandbox session keeps variables and files between turns.
        with in_conversation(f"terminal-{uuid.uuid4().hex}"):
            while True:
                try:
                    line = input("you> ").strip()
                except EOFError:
                    return 0
                if line in ("exit", "quit"):
                    return 0
                if line:
                    print(f"agent> {(await agent.run(line, session=session)).text}\n")
    finally:
        await sessions.close_all()
        await sandbox.close()
