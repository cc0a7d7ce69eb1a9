"""Prefect for real: deployments from prefect.yaml, a worker, event-triggered silver and gold,
and the collision strategy of the ingest deployment."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from tasks.catalog import open_catalog
from tasks.simulator import TrafficProfile, generate, produce
from tasks.tables import GOLD_DAILY_CONVERSION_METRICS
from tests.conftest import ROOT, stack_environment

pytestmark = pytest.mark.stack
DEPLOYMENTS = {"ingest", "silver", "gold", "maintenance", "produce", "pipeline"}


def lakehouse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=stack_environment(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


async def _client_call(settings, fn):
    from infra.services import prefect_client

    async with prefect_client(settings) as client:  # the server has basic auth
        return await fn(client)


def call(settings, fn):
    return asyncio.run(_client_call(settings, fn))


@pytest.fixture(scope="module")
def deployed(stack_settings):
    first = lakehouse("deploy")
    assert first.returncode == 0, first.stdout + first.stderr
    yield stack_settings, first.stdout
    # Leave no schedule running behind the rest of the suite.
    async def pause(client):
        for deployment in await client.read_deployments():
            await client.pause_deployment(deployment.id)
    call(stack_settings, pause)


def test_deploy_is_idempotent_and_registers_every_deployment(deployed):
    settings, first = deployed
    before = call(settings, lambda c: c.read_deployments())
    again = lakehouse("deploy")
    assert again.returncode == 0, again.stderr
    assert "work pool 'lakehouse': already there" in again.stdout
    assert "concurrency limits created: none, all there" in again.stdout
    after = call(settings, lambda c: c.read_deployments())
    assert {d.name for d in after} >= DEPLOYMENTS
    assert {d.name: d.id for d in after if d.name in DEPLOYMENTS} == {d.name: d.id for d in before if d.name in DEPLOYMENTS}
    by_name = {d.name: d for d in after}
    assert by_name["ingest"].schedules and by_name["silver"].schedules and by_name["maintenance"].schedules
    limit = by_name["ingest"].global_concurrency_limit
    assert limit is not None and limit.limit == 1
    assert by_name["ingest"].concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert by_name["silver"].concurrency_options.collision_strategy.value == "ENQUEUE"
    from deployments.deploy import ZOMBIE_AUTOMATION

    zombies = call(settings, lambda c: c.read_automations_by_name(ZOMBIE_AUTOMATION))
    assert len(zombies) == 1 and zombies[0].enabled  # created once, whatever the number of deploys


def _runs(settings, deployment: str, since: datetime):
    """The deployment's runs that started after ``since``. Scheduled runs are left out: they have
    no start time yet, the filter lets them through, and the schedules create dozens of them."""
    from prefect.client.schemas.filters import (
        DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterStartTime, FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return call(settings, lambda c: c.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
        flow_run_filter=FlowRunFilter(
            start_time=FlowRunFilterStartTime(after_=since),
            state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED, StateType.PENDING])),
        ),
        limit=200,
    ))


def _wait(settings, deployment: str, since: datetime, automated: bool, timeout: float = 420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [r for r in _runs(settings, deployment, since)
                if r.state and r.state.is_completed()
                and (not automated or (r.created_by is not None and r.created_by.type == "AUTOMATION"))]
        if done:
            return done[0]
        time.sleep(3)
    raise AssertionError(f"no completed {'event-triggered ' if automated else ''}{deployment} run within {timeout}s")


def test_cli_ingest_run_triggers_silver_and_gold_by_event(deployed):
    settings, _ = deployed
    # A new seed each time: the same seed sends the same event ids, which silver rightly drops as
    # duplicates when the test runs again on the same stack. One day of clean traffic, so every
    # event must reach gold.
    profile = TrafficProfile(events=3000, days=1, seed=int(time.time()), end=datetime.now(timezone.utc),
                             malformed_rate=0.0, wrong_conversion_rate=0.0)
    produce(settings, profile)
    sent: dict = {}
    for record in generate(profile):
        event = json.loads(record.value)
        sent[event["event_id"]] = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")).date()
    per_day = Counter(sent.values())
    since = datetime.now(timezone.utc)
    started = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "prefect"), "deployment", "run", "ingest-bronze/ingest"],
        env={**stack_environment(), "PREFECT_API_URL": settings.prefect_api_url},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 0, started.stderr
    ingest = _wait(settings, "ingest", since, automated=False)
    silver = _wait(settings, "silver", ingest.start_time, automated=True)
    gold = _wait(settings, "gold", silver.start_time, automated=True)
    assert silver.parameters.get("bronze_snapshot_id") and gold.parameters.get("silver_snapshot_id")
    # The first event-triggered gold run found may come from a silver commit just before this
    # ingest's (the silver schedule runs too): the chain goes on until gold counts every event
    # sent (the stack's topic may hold others: at least as many).
    deadline = time.monotonic() + 300
    while True:
        rows = open_catalog(settings, "serving").load_table(GOLD_DAILY_CONVERSION_METRICS.identifier).scan(
            selected_fields=("event_date", "requests")).to_arrow().to_pylist()
        counted = Counter()
        for r in rows:
            counted[r["event_date"]] += r["requests"]
        short = {d: (counted[d], n) for d, n in per_day.items() if counted[d] < n}
        if not short or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert not short, f"gold requests below the events sent, per day (gold, sent): {short}"


def test_two_ingest_runs_requested_at_once_never_overlap(deployed):
    from prefect.deployments import run_deployment

    settings, _ = deployed
    import os

    os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    # The every-minute schedule is paused meanwhile: a scheduled run that holds the slot when the
    # two requests arrive gets both cancelled (CANCEL_NEW), which is right but proves nothing here
    # (CI found it so, once the test ran after the rest of the suite had loaded the stack).
    deployment = call(settings, lambda c: c.read_deployment_by_name("ingest-bronze/ingest"))
    call(settings, lambda c: c.pause_deployment(deployment.id))
    try:
        _wait_until_idle(settings, deployment.id)
        _two_at_once(settings, run_deployment)
    finally:
        call(settings, lambda c: c.resume_deployment(deployment.id))


def _wait_until_idle(settings, deployment_id, timeout: float = 300) -> None:
    """Until no run of the deployment is pending or running."""
    from prefect.client.schemas.filters import (
        DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = call(settings, lambda c: c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.PENDING, StateType.RUNNING]))), limit=10))
        if not active:
            return
        time.sleep(2)
    raise AssertionError(f"ingest runs still active after {timeout:.0f}s: {[r.name for r in active]}")


def _two_at_once(settings, run_deployment) -> None:
    since = datetime.now(timezone.utc)
    first = run_deployment("ingest-bronze/ingest", timeout=0)
    second = run_deployment("ingest-bronze/ingest", timeout=0)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        states = [call(settings, lambda c, i=r.id: c.read_flow_run(i)).state for r in (first, second)]
        if all(s is not None and s.is_final() for s in states):
            break
        time.sleep(3)
    runs = [call(settings, lambda c, i=r.id: c.read_flow_run(i)) for r in (first, second)]
    names = {r.state_name for r in runs}
    assert names <= {"Completed", "Cancelled"}, names
    assert "Completed" in names
    ran = _running_intervals(settings, _runs(settings, "ingest", since))
    for (_, end, first), (start, _, second) in zip(ran, ran[1:]):
        assert start >= end, f"ingest runs {first} and {second} overlapped"


def _running_intervals(settings, runs) -> list[tuple]:
    """(entered Running, entered a final state, id) of the runs that ran, from the server's state
    history. A run cancelled by CANCEL_NEW never runs, yet Prefect stamps its start and end time
    with the moment it was cancelled, inside the interval of the run that held the slot: that is
    what an earlier version of this test mistook for an overlap."""
    intervals = []
    for run in runs:
        states = sorted(call(settings, lambda c, i=run.id: c.read_flow_run_states(i)), key=lambda s: s.timestamp)
        running = [s.timestamp for s in states if s.type.value == "RUNNING"]
        final = [s.timestamp for s in states if s.is_final()]
        if running and final:
            intervals.append((running[0], final[-1], run.id))
    return sorted(intervals)


# Headless Chromium for the UI test, driven through the DevTools protocol (tests/e2e/cdp.py). No
# --virtual-time-budget: that flag belongs to one-shot --dump-dom/--screenshot runs, and with it
# the browser detaches the very tab the protocol drives as soon as it navigates.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
]
SCHEDULES = {"ingest": "Every minute", "silver": "Every 15 minutes", "gold": "Hourly",
             "maintenance": "At 03:30 AM every day"}
# Prefect's UI (v1, prefect/server/ui, Unauthenticated.vue): when /ui-settings says auth is BASIC
# and GET /api/admin/version answers 401, the router sends every page to /login?redirect=<page>.
# Its form has one password-type field (placeholder "admin:pass") that takes the WHOLE
# PREFECT_SERVER_API_AUTH_STRING, user:password; on submit the UI stores btoa(value) in
# localStorage["prefect-password"], checks it with GET /api/admin/version (every request then
# carries "Authorization: Basic <that>"), drops it again and toasts "Authentication failed." on a
# 401, else goes on to the redirect page.
LOGIN_FIELD = "form input[type=password]"
LOGIN_BUTTON = "form button[type=submit]"
STORED_CREDENTIAL = "localStorage.getItem('prefect-password')"


def _page_text(page) -> str:
    """The page's markup as words, tags dropped (what the assertions on names and schedules read)."""
    import html
    import re

    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page.html())))


def _deployments_missing(text: str) -> list[str]:
    import re

    missing = [f"deployment {name}" for name in sorted(DEPLOYMENTS) if f" {name} " not in text]
    missing += [f"{name} with '{schedule}'" for name, schedule in SCHEDULES.items()
                if not re.search(rf" {name} [\w-]+ \w+[^|]*?{schedule}", text)]
    return missing


def _dismiss_toasts(page) -> None:
    """Close the toasts the login left (they cover the list's right side in the screenshot)."""
    for _ in range(20):
        spot = page.evaluate("""(() => { for (const b of document.querySelectorAll('.p-toast__close-btn')) {
            const r = b.getBoundingClientRect();
            if (r.width && r.height) return [r.x + r.width / 2, r.y + r.height / 2]; } return null; })()""")
        if not spot:
            return
        page.click_at(*spot)
        time.sleep(0.5)


def _on_login_page(page) -> None:
    """The login form, and not one deployment: the API refuses the page without the credential."""
    page.wait_for(f"location.pathname === '/login' && !!document.querySelector({LOGIN_FIELD!r})",
                  what="the login page")
    text = _page_text(page)
    shown = [name for name in sorted(DEPLOYMENTS) if f" {name} " in text]
    assert not shown, f"deployments {shown} are shown on the login page"
    assert page.evaluate(STORED_CREDENTIAL) is None, "the UI kept a credential the server refused"


@pytest.mark.skipif(not __import__("os").path.exists("/usr/bin/chromium"), reason="Debian's chromium is not installed")
def test_prefect_ui_lists_every_deployment_with_its_schedule(deployed, tmp_path):
    """The real UI in headless Chromium, driven through the DevTools protocol like a user: the
    server's basic auth puts the deployments behind the login form, a wrong credential is refused
    there, the right one opens the deployments page, rendered with every name and schedule."""
    import base64
    import shutil
    import urllib.error
    import urllib.request

    from tests.e2e.cdp import Chromium

    settings, _ = deployed
    assert settings.prefect_api_auth_string is not None, "the stack's Prefect server has no basic auth"
    credential = settings.prefect_api_auth_string.get_secret_value()
    user, _, password = credential.partition(":")
    assert user and password, "prefect_api_auth_string is not user:password"

    # The API itself refuses a client without the credential, whatever the UI shows.
    request = urllib.request.Request(f"{settings.prefect_api_url}/deployments/filter", data=b"{}",
                                     headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310 - loopback
    assert refused.value.code == 401

    ui = settings.prefect_api_url.removesuffix("/api")
    with Chromium(CHROMIUM_FLAGS, tmp_path / "chromium-profile", timeout=60) as browser:
        page = browser.new_page()
        page.navigate(f"{ui}/deployments")
        _on_login_page(page)

        # Wrong credentials: the right user with a wrong password (submitted with Enter), then the
        # password alone without its user (with the button): both refused, still on the login page.
        for wrong, submit in ((f"{user}:not-the-password", "enter"), (password, "click")):
            page.type_into(LOGIN_FIELD, wrong)
            mark = page.mark()
            if submit == "enter":
                page.key("Enter")
            else:
                page.click(LOGIN_BUTTON)
            check = page.wait_for_response("/api/admin/version", after=mark)
            assert check["status"] == 401, f"a wrong credential got HTTP {check['status']} from the API"
            page.wait_for("document.body.innerText.includes('Authentication failed.')", what="the refusal")
            _on_login_page(page)

        # The right one: user:password, as the field's placeholder (admin:pass) says.
        page.type_into(LOGIN_FIELD, credential)
        mark = page.mark()
        page.click(LOGIN_BUTTON)
        check = page.wait_for_response("/api/admin/version", after=mark)
        assert check["status"] == 200, f"the right credential got HTTP {check['status']} from the API"
        page.wait_for("location.pathname === '/deployments'", what="the redirect to the deployments page")
        stored = page.evaluate(STORED_CREDENTIAL)
        as_basic_auth = stored == base64.b64encode(credential.encode()).decode()
        assert as_basic_auth, "the UI does not hold the credential as its Basic authorization"  # no value in the report

        deadline = time.monotonic() + 60
        while (missing := _deployments_missing(_page_text(page))) and time.monotonic() < deadline:
            time.sleep(1)
        assert not missing, f"the deployments page does not show {missing}: {page.text()[:1500]!r}"
        _dismiss_toasts(page)
        shot = page.screenshot(tmp_path / "prefect-deployments.png")
    assert shot.exists() and shot.stat().st_size > 10_000
    keep = ROOT / ".lakehouse" / "test-output"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / shot.name)
