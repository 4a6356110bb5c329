"""Checks of the promises of SPEC sections 4 and 8 against the database, for any workspace.
The finalizer's property test and the fault-injection harness both judge by these."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from shared.events import FINAL_STATUSES

#: the settlement outcome each terminal video status must have been settled with
OUTCOME_OF = {"ready": "succeeded", "approved": "succeeded", "rejected": "succeeded",
              "failed": "failed", "canceled": "canceled"}


async def ledger_problems(pool: asyncpg.Pool, workspace: UUID) -> list[str]:
    """SPEC section 4 for one workspace, from its append-only ledger: balance = grants -
    charges, reserved = reserves - charges - releases, available never negative, and no job
    charged or released twice."""
    sums = {r["kind"]: int(r["total"]) for r in await pool.fetch(
        "SELECT kind, sum(amount) AS total FROM credit_ledger WHERE workspace_id = $1"
        " GROUP BY kind", workspace)}
    row = await pool.fetchrow(
        "SELECT credits_balance, credits_reserved FROM workspaces WHERE id = $1", workspace)
    if row is None:
        return [f"workspace {workspace} does not exist"]
    grants, charges = sums.get("grant", 0), sums.get("charge", 0)
    reserves, releases = sums.get("reserve", 0), sums.get("release", 0)
    problems = []
    if row["credits_balance"] != grants - charges:
        problems.append(f"workspace {workspace}: balance {row['credits_balance']} != grants "
                        f"{grants} - charges {charges}")
    if row["credits_reserved"] != reserves - charges - releases:
        problems.append(f"workspace {workspace}: reserved {row['credits_reserved']} != "
                        f"{reserves} - {charges} - {releases}")
    if row["credits_balance"] - row["credits_reserved"] < 0:
        problems.append(f"workspace {workspace}: available balance is negative")
    twice = await pool.fetch(
        "SELECT job_id, kind, count(*) AS n FROM credit_ledger WHERE workspace_id = $1"
        " AND kind IN ('reserve', 'charge', 'release') GROUP BY job_id, kind"
        " HAVING count(*) > 1", workspace)
    problems += [f"job {r['job_id']}: {r['n']} {r['kind']} entries" for r in twice]
    return problems


async def settlement_problems(pool: asyncpg.Pool, workspace: UUID) -> list[str]:
    """Every video of the workspace ended, its job settled exactly once with the outcome of
    its status, charged + released = the reservation, and the charge on the video."""
    rows = await pool.fetch(
        """
        SELECT v.id, v.status, v.credits_quoted, v.credits_charged, j.id AS job_id, j.state,
               s.outcome, s.charged, s.released,
               (SELECT coalesce(sum(amount), 0) FROM credit_ledger l
                 WHERE l.job_id = j.id AND l.kind = 'reserve') AS reserved
          FROM videos v
          LEFT JOIN jobs j ON j.video_id = v.id
          LEFT JOIN settlements s ON s.job_id = j.id
         WHERE v.workspace_id = $1
        """, workspace)
    problems = []
    for r in rows:
        video = f"video {r['id']} ({r['status']}, job {r['state']})"
        if r["status"] not in FINAL_STATUSES:
            problems.append(f"{video} did not reach a terminal state")
            continue
        if r["job_id"] is None:
            problems.append(f"{video} has no job")
            continue
        if r["outcome"] is None:
            problems.append(f"{video} was never settled")
            continue
        if r["outcome"] != OUTCOME_OF[r["status"]]:
            problems.append(f"{video} settled as {r['outcome']}")
        if r["charged"] + r["released"] != r["reserved"]:
            problems.append(f"{video}: charged {r['charged']} + released {r['released']} != "
                            f"reserved {r['reserved']}")
        if r["outcome"] != "succeeded" and r["charged"] != 0:
            problems.append(f"{video}: charged {r['charged']} for a {r['outcome']} job")
        if (r["credits_charged"] or 0) != r["charged"]:
            problems.append(f"{video}: shows {r['credits_charged']} charged, ledger "
                            f"{r['charged']}")
    return problems
