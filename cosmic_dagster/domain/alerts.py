"""Failed-run alerts: a short message (scans, asset, error, link) posted to a chat webhook.

The Dagster side (:mod:`cosmic_dagster.defs.alert_sensor`) hands over what a failed run left behind:
its tags, the failed scans the pipeline step recorded (as structured failure metadata, see
:func:`describe_failures`), and the texts of any other failure (worker crash, a bug), which are
reported as one error for the run's scans, read from its partition tags.

The payload is ``{"text": ...}``, which Slack and Mattermost incoming webhooks both render, plus
the same facts as structured fields for other receivers. A webhook URL usually embeds a token, so
it never appears in a payload, an exception or a log line from here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from cosmic_dagster import names
from cosmic_dagster.errors import CosmicError

MAX_ERROR_CHARS = 300
MAX_LISTED_SCANS = 10


class AlertDeliveryError(CosmicError, RuntimeError):
    """The webhook did not take an alert. The message says why, never where (no URL)."""


@dataclass(frozen=True)
class ScanFailure:
    scan: str
    asset: str
    error: str


@dataclass(frozen=True)
class FailedRun:
    run_id: str
    job: str
    tags: Mapping[str, str]
    errors: Sequence[str]  # failures not tied to a scan: worker crash, a bug, the run's own message
    scans: Sequence[ScanFailure] = ()  # what the pipeline step recorded per failed scan


def describe_failures(failures: Sequence[ScanFailure], total: int) -> str:
    """The pipeline step's failure text in the UI: one line per failed scan."""
    lines = "\n".join(f"- {f.scan}: {f.asset}: {f.error}" for f in failures)
    return f"{len(failures)} of {total} scans failed:\n{lines}"


def run_scans(tags: Mapping[str, str]) -> list[str]:
    """The run's scans as its tags name them: [key], [first, last] of a range, or []."""
    if tags.get(names.TAG_PARTITION):
        return [tags[names.TAG_PARTITION]]
    start, end = tags.get(names.TAG_RANGE_START), tags.get(names.TAG_RANGE_END)
    if start and end:
        return [start] if start == end else [start, end]
    return []


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """One line of at most ``limit`` characters (stack traces and long reasons stay short)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel>); an error text must not ping anyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_alert(run: FailedRun, ui_url: str) -> dict[str, Any]:
    """The webhook payload: ``text`` for chat, and the same facts as fields."""
    link = f"{ui_url.rstrip('/')}/runs/{run.run_id}"
    scans = run.scans
    general = "\n".join(run.errors)
    run_range = run_scans(run.tags)
    will_retry = run.tags.get(names.TAG_WILL_RETRY) == "true"

    head = f"Run {run.run_id[:8]} of {run.job} failed"
    if run_range:
        head += f" (scan{'s' if len(run_range) > 1 else ''} {' … '.join(f'`{k}`' for k in run_range)})"
    if scans:
        head += f": {len(scans)} scan{'s' if len(scans) != 1 else ''} failed"
    lines = [head + ("; Dagster retries it automatically" if will_retry else "")]
    lines += [f"• `{s.scan}` {s.asset}: {_escape(clip(s.error))}" for s in scans[:MAX_LISTED_SCANS]]
    if len(scans) > MAX_LISTED_SCANS:
        lines.append(f"• …and {len(scans) - MAX_LISTED_SCANS} more")
    if general or not scans:
        lines.append(f"Error: {_escape(clip(general or 'no error message recorded'))}")
    lines.append(link)
    return {
        "text": "\n".join(lines),
        "run_id": run.run_id,
        "job": run.job,
        "link": link,
        "scan_range": run_range or None,
        "scans": [{"scan": s.scan, "asset": s.asset, "error": clip(s.error)} for s in scans],
        "error": clip(general) if general else None,
        "will_retry": will_retry,
    }


def post_alert(
    url: str,
    payload: Mapping[str, Any],
    *,
    attempts: int = 3,
    timeout_s: float = 5.0,
    backoff_s: float = 0.5,
) -> None:
    """POST the payload; retry connection errors, 429 and 5xx; raise AlertDeliveryError if not taken.

    Another 4xx (revoked token, deleted channel) is not retried: it will not pass seconds later.
    Neither the URL nor the answer's body (servers echo the path) goes into the error.
    """
    problem, attempt = "", 0
    for attempt in range(1, attempts + 1):
        try:
            response = requests.post(url, json=payload, timeout=timeout_s)
        except requests.Timeout:
            problem = f"no answer within {timeout_s:g} s"
        except requests.RequestException as exc:
            problem = f"cannot connect ({type(exc).__name__})"
        else:
            if 200 <= response.status_code < 300:
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AlertDeliveryError(f"webhook did not take the alert ({problem}, {attempt} attempt(s))")
