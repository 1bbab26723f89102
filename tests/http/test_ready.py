"""`/ready` reflects the configured back end (a cached self-check); `/health` stays cheap liveness; DevUI's page
is still served through the same layer."""

import json
import subprocess
import sys
import time

import httpx
import pytest

from service import ROOT, clean_env, running_service


def _doctor(name: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "local_code_interpreter", "doctor", "--json"], env=clean_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return next(b for b in json.loads(done.stdout)["backends"] if b["name"] == name)


def test_subprocess_back_end_is_ready_and_answers_from_cache():
    with running_service() as (base, _p, _s):
        answer = httpx.get(f"{base}/ready", timeout=60)
        assert answer.status_code == 200, answer.text
        state = answer.json()
        assert state["status"] == "ready" and state["sandbox"] == "subprocess"
        started = time.perf_counter()
        with httpx.Client(base_url=base) as probe:
            for _ in range(20):
                assert probe.get("/ready").json()["checked_at"] == state["checked_at"]  # cached, not re-run
        print(f"\n/ready (cached) x20: {(time.perf_counter() - started) * 1000 / 20:.1f} ms each")
        assert httpx.get(f"{base}/health").json() == {"status": "healthy"}


def test_hyperlight_back_end_readiness_matches_the_library():
    report = _doctor("hyperlight")
    with running_service(env=clean_env(LCI_SANDBOX="hyperlight")) as (base, _p, _s):
        answer = httpx.get(f"{base}/ready", timeout=120)
        assert httpx.get(f"{base}/health").status_code == 200  # liveness is not readiness
    state = answer.json()
    print(f"\nhyperlight doctor usable={report['usable']}: /ready {answer.status_code} {state}")
    if report["usable"]:
        assert answer.status_code == 200 and state["status"] == "ready"
    else:
        assert answer.status_code == 503 and state["status"] == "unavailable" and state["sandbox"] == "hyperlight"
        assert state["reason"]  # the back end's own words
        library_words = report["detail"].split(":")[-1].strip()[:20]
        assert library_words and (library_words in state["reason"] or "hyperlight" in state["reason"].lower()), \
            (library_words, state["reason"])


def test_devui_page_and_assets_are_served():
    with running_service() as (base, _p, _s):
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and '<div id="root"' in page.text
        script = page.text.split('src="', 1)[1].split('"', 1)[0]
        assert httpx.get(f"{base}/{script.removeprefix('./').lstrip('/')}").status_code == 200
        entities = httpx.get(f"{base}/v1/entities").json()["entities"]
        assert [e["name"] for e in entities] == ["local-code-interpreter"]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_probes_only_answer_get(method):
    with running_service() as (base, _p, _s):
        assert httpx.request(method, f"{base}/ready").status_code == 405
