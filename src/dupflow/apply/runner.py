"""Apply and undo runs: dry run by default; executed runs journal every move before and after it, so
a run killed at any point resumes with no file lost, none duplicated and none moved twice."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dupflow import __version__
from dupflow.apply.journal import LOCAL_LOG, SEGMENTS, Begin, Done, End, Intent, Journal, RunState, moved_files
from dupflow.apply.moves import STALE_BYTES, Files, Moved, Skip
from dupflow.apply.plan import Plan, plan_apply, read_manifest
from dupflow.apply.settings import ApplyOptions
from dupflow.errors import ConfigError, DupflowError
from dupflow.io.faults import fault_point
from dupflow.io.fs import is_local, storage_error
from dupflow.io.uris import escapes, local_escapes, parent, redact, sidecar_name, suffixed
from dupflow.schemas import APPLY_ACTIONS, APPLY_RESULTS

__all__ = ["ApplyReport", "apply_manifest", "undo_journal"]

_WORDS = {"apply": ("moved", "already_moved", "would_move"), "undo": ("restored", "already_restored", "would_restore")}
_LANDED = frozenset({"moved", "already_moved", "restored", "already_restored"})
_MAX_SUFFIX = 1000
_UNDO_REASONS = {  # a move's reasons, in undo's words: the journal (not a manifest) recorded what was moved
    "source missing": "the moved file is no longer at {source}",
    "destination exists": "the original place is taken: {destination}",
    STALE_BYTES: "changed since it was moved: its bytes no longer match the SHA-256 the journal recorded",
}
_TABLES = ("plan-", "result-", "dry-run-")  # the tables a run writes beside the log


@dataclass
class ApplyReport:
    """What a run did (or, dry, would do): counts per outcome and the table of every file."""

    mode: str  # apply | undo
    executed: bool
    journal: str
    results_url: str  # result-RUN.parquet or dry-run-RUN.parquet in the journal folder
    results: pa.Table  # APPLY_RESULTS
    run: str
    resumed: bool = False
    unfinished: str | None = None  # a dry run's note: the journal holds a run that never ended
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None  # why nothing ran (e.g. --resume with nothing to resume), and what to do instead

    def brief(self) -> dict[str, Any]:
        """The report without its table: small enough to return from a task or put in a summary."""
        return {"mode": self.mode, "executed": self.executed, "run": self.run, "resumed": self.resumed,
                "counts": dict(self.counts), "bytes": self.bytes_moved, "journal": self.journal,
                "results": self.results_url}

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def bytes_moved(self) -> int:
        moved = self.results.filter(pc.is_in(self.results["outcome"], pa.array(
            ["moved", "restored", "would_move", "would_restore"])))
        return int(pc.sum(moved["size"]).as_py() or 0)


def apply_manifest(
    manifest_url: str | None, journal_url: str, options: ApplyOptions | None = None, *, execute: bool = False,
    resume: bool = False, storage_options: dict[str, Any] | None = None,
) -> ApplyReport:
    """Apply a move manifest. Dry (the default), nothing changes: every file is checked and what would
    happen is written to JOURNAL/dry-run-RUN.parquet. With `execute`, files move. `resume` finishes a
    killed run of the same manifest first (the manifest may then be omitted)."""
    options = options or ApplyOptions()
    journal = Journal(journal_url, storage_options)
    files = Files(storage_options)
    if manifest_url is None and resume and not _folder_exists(journal):  # killed before the journal existed
        return _nothing_to_resume(journal, [], execute)
    with _held(journal, execute):
        pending = journal.unfinished()
        if pending is not None and execute:
            if pending.mode != "apply":
                raise ConfigError(f"the journal {journal.url} holds an undo (run {pending.run}) that did not finish: "
                                  f"finish it with `dupflow undo {journal.url} --execute --resume`")
            if (manifest_url is not None
                    and read_manifest(manifest_url, storage_options)[2] != pending.begin.manifest_sha256):
                raise ConfigError(f"the journal {journal.url} holds an unfinished run (run {pending.run}) of another "
                                  f"manifest, {pending.begin.manifest}: finish it first with `dupflow apply "
                                  f"--journal {journal.url} --execute --resume`, or use another --journal")
            if not resume:
                raise ConfigError(f"the journal {journal.url} holds a run that did not finish (run {pending.run}, "
                                  f"{pending.begin.manifest}): add --resume to finish it")
            resumed = ApplyOptions.from_record(pending.begin.options, pending.begin.duplicates_root)
            opts = ApplyOptions(**{**resumed.__dict__, "threads": options.threads, "batch": options.batch})
            return _Run(journal, files, pending.begin, journal.read_table(pending.begin.plan), opts).execute(pending)
        if manifest_url is None:
            if pending is not None:
                raise ConfigError(f"the journal {journal.url} holds a run that did not finish (run {pending.run}): "
                                  f"add --execute to finish it (a dry run needs the manifest: `dupflow apply "
                                  f"{pending.begin.manifest} --journal {journal.url}`)")
            if resume:
                return _nothing_to_resume(journal, journal.runs(), execute)
            raise ConfigError("name the manifest to apply (only --resume of an unfinished run can omit it)")
        plan = plan_apply(manifest_url, options, storage_options)
        begin = _begin("apply", plan.duplicates_root, options, plan)
        run = _Run(journal, files, begin, plan.actions, options)
        if not execute:
            report = run.dry()
            report.unfinished = pending.run if pending is not None else None
            return report
        return run.start()


def undo_journal(journal_url: str, *, execute: bool = False, resume: bool = False, threads: int = 8,
                 storage_options: dict[str, Any] | None = None) -> ApplyReport:
    """Put every file the journal's runs moved (and no later undo restored) back where it was, with the
    same checks. Dry by default."""
    journal = Journal(journal_url, storage_options)
    files = Files(storage_options)
    with _held(journal, execute):
        runs = journal.runs()
        if not runs:
            raise ConfigError(f"{journal.url} holds no apply run: nothing to undo (is it the right --journal?)")
        pending = runs[-1] if not runs[-1].finished else None
        if pending is not None and pending.mode == "apply":
            raise ConfigError(f"the apply run {pending.run} in {journal.url} did not finish: finish it with `dupflow "
                              f"apply --journal {journal.url} --execute --resume`, then undo")
        options = ApplyOptions(threads=threads)
        if pending is not None and execute:
            if not resume:
                raise ConfigError(f"the undo run {pending.run} in {journal.url} did not finish: add --resume")
            plan = journal.read_table(pending.begin.plan)
            return _Run(journal, files, pending.begin, plan, options).execute(pending)
        finished = [r for r in runs if r.finished]
        plans = {r.run: journal.read_table(r.begin.plan) for r in finished}
        moved = moved_files(finished, plans)
        roots = {r.run: r.begin.duplicates_root for r in finished}
        units_of = {run: plan["unit"].to_pylist() for run, plan in plans.items()}
        units: dict[tuple[str, int], list[tuple[str, Done]]] = {}  # an image with its sidecars, newest first
        for original, rec in reversed(moved.items()):
            units.setdefault((rec.run, units_of[rec.run][rec.action]), []).append((original, rec))
        rows: list[dict[str, Any]] = []
        for members in units.values():
            head = len(rows)
            for original, rec in sorted(members, key=lambda m: m[1].action):  # the image first, as it moved
                outside = escapes(roots[rec.run], rec.destination)
                rows.append({"action": len(rows), "unit": head, "kind": rec.kind, "source": rec.destination,
                             "destination": original, "size": rec.size, "sha256": rec.sha256,
                             "refused": "the journal places it outside the duplicates root" if outside else None})
        begin = _begin("undo", "", options, None)
        run = _Run(journal, files, begin, pa.Table.from_pylist(rows, schema=APPLY_ACTIONS), options)
        return run.start() if execute else run.dry()


def _folder_exists(journal: Journal) -> bool:
    try:
        return bool(journal.fs.exists(journal.root))
    except OSError as exc:
        raise storage_error(exc, journal.url, "look at the journal") from exc


def _nothing_to_resume(journal: Journal, runs: list[RunState], execute: bool) -> ApplyReport:
    """The report of `--resume` without a manifest where no run is unfinished: nothing ran, and what to run
    instead. Refused where the folder holds files of its own but no run: it may not be the journal meant."""
    applied = [r.begin.manifest for r in runs if r.mode == "apply" and r.begin.manifest]
    again = f"`dupflow apply {applied[-1] if applied else 'MANIFEST'} --journal {journal.url} --execute`"
    if runs:
        note = (f"nothing to resume: the journal {journal.url} holds no unfinished run (the last, {runs[-1].run}, "
                f"finished); to apply the manifest again, run {again}")
    else:
        foreign = _foreign_files(journal)
        if foreign:
            raise ConfigError(f"{journal.url} is not an apply journal (no run began there, and it holds "
                              f"{foreign[0]}): pass the --journal the killed run used (default: apply-journal beside "
                              f"the manifest), or the manifest to apply")
        note = (f"nothing to resume: no run began in the journal {journal.url}, so nothing was moved; to apply the "
                f"manifest, run {again}")
    results = pa.Table.from_pylist([], schema=APPLY_RESULTS)
    return ApplyReport("apply", execute, journal.url, "", results, runs[-1].run if runs else "", note=note)


def _foreign_files(journal: Journal) -> list[str]:
    """Names in the journal folder that no apply run writes."""
    if not _folder_exists(journal):
        return []
    try:
        names = sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in journal.fs.ls(journal.root, detail=False))
    except OSError as exc:
        raise storage_error(exc, journal.url, "list the journal") from exc
    ours = (".lock", LOCAL_LOG, SEGMENTS)
    return [n for n in names if n not in ours and not (n.endswith(".parquet") and n.startswith(_TABLES))]


@contextlib.contextmanager
def _held(journal: Journal, execute: bool) -> Iterator[None]:
    if not execute:
        yield
        return
    with journal.lock():
        yield


def _begin(mode: str, root: str, options: ApplyOptions, plan: Plan | None) -> Begin:
    run = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    return Begin(
        run=run, mode=mode, plan=f"plan-{run}.parquet", manifest=plan.manifest if plan else None,
        manifest_sha256=plan.manifest_sha256 if plan else None, duplicates_root=root, options=options.describe(),
        at=datetime.now(UTC).isoformat(), dupflow=__version__, host=socket.gethostname(), pid=os.getpid(),
    )


@dataclass
class _Prepared:
    final: list[Done]  # outcomes decided without touching anything
    todo: list[tuple[dict[str, Any], str]]  # (action row, destination) to move, the image first


class _Run:
    """One apply or undo run over its planned actions."""

    def __init__(self, journal: Journal, files: Files, begin: Begin, actions: pa.Table,
                 options: ApplyOptions) -> None:
        self.journal, self.files, self.begin, self.options = journal, files, begin, options
        self.run, self.mode, self.root = begin.run, begin.mode, begin.duplicates_root
        self.actions = actions
        self.rows: list[dict[str, Any]] = actions.to_pylist()
        self.units: dict[int, list[dict[str, Any]]] = {}
        for row in self.rows:
            self.units.setdefault(row["unit"], []).append(row)
        self.done: dict[int, Done] = {}
        self.moved_word, self.already_word, self.would_word = _WORDS[self.mode]

    # -- entry points -----------------------------------------------------------------------------
    def start(self) -> ApplyReport:
        self.journal.write_table(self.begin.plan, self.actions)
        self.journal.append([self.begin])
        return self.execute(None)

    def execute(self, state: RunState | None) -> ApplyReport:
        if state is not None:
            self.done.update(state.done)
            self._settle(state)
        pending = [u for u, rows in self.units.items() if any(r["action"] not in self.done for r in rows)]
        with ThreadPoolExecutor(self.options.threads) as pool:
            for batch in _batches(pending, self.units, self.options.batch):
                prepared = list(pool.map(self._prepare, batch))
                intents = [Intent(self.run, row["action"], dst) for p in prepared for row, dst in p.todo]
                self._record([rec for p in prepared for rec in p.final] + intents)
                fault_point("apply.intents")
                finished = pool.map(self._perform, [p.todo for p in prepared if p.todo])
                self._record([rec for recs in finished for rec in recs])
        results = self._results()
        url = self.journal.write_table(f"result-{self.run}.parquet", results)
        counts = _counts(results)
        self.journal.append([End(self.run, counts, datetime.now(UTC).isoformat())])
        return ApplyReport(self.mode, True, self.journal.url, url, results, self.run, state is not None, None, counts)

    def dry(self) -> ApplyReport:
        with ThreadPoolExecutor(self.options.threads) as pool:
            for p in pool.map(self._prepare, list(self.units)):
                for rec in p.final:
                    self.done[rec.action] = rec
                for row, dst in p.todo:
                    self.done[row["action"]] = self._done(row, self.would_word, None, dst, row["size"], row["sha256"])
        results = self._results()
        url = self.journal.write_table(f"dry-run-{self.run}.parquet", results)
        return ApplyReport(self.mode, False, self.journal.url, url, results, self.run, counts=_counts(results))

    # -- steps ---------------------------------------------------------------------------------------
    def _record(self, records: list[Intent | Done]) -> None:
        self.journal.append(records)
        for rec in records:
            if isinstance(rec, Done):
                self.done[rec.action] = rec

    def _settle(self, state: RunState) -> None:
        """Finish or roll back every move that was under way when the run was killed."""
        records: list[Intent | Done] = []
        for a, intent in state.intents.items():
            if a in state.done:
                continue
            row = self.rows[a]
            try:
                landed = self.files.settle(row["source"], intent.destination, self._tag(row), row["sha256"])
            except Skip as exc:
                records.append(self._done(row, "skipped", str(exc), intent.destination))
                continue
            except DupflowError as exc:
                records.append(self._done(row, "failed", redact(str(exc)), intent.destination))
                continue
            if landed is not None:
                records.append(self._done(row, self.moved_word, None, intent.destination, landed.size, landed.sha256))
        self._record(records)

    def _prepare(self, unit: int) -> _Prepared:
        """Read-only checks of one image and its sidecars: what is final already, and what to move where."""
        rows = [r for r in self.units[unit] if r["action"] not in self.done]
        final: list[Done] = []
        head = self.done.get(unit)
        if head is not None and head.outcome not in _LANDED:
            return _Prepared([self._done(r, "skipped", self._left_with_image(unit), r["destination"]) for r in rows],
                             [])
        live = []
        for row in rows:
            try:
                refusal = row["refused"] or self._leaves_root(row["destination"])
                verdict = refusal or self._source_problem(row)
            except DupflowError as exc:
                final.append(self._done(row, "failed", redact(str(exc)), row["destination"]))
                continue
            if verdict is None:
                live.append(row)
            elif isinstance(verdict, Done):
                final.append(verdict)
            else:
                final.append(self._done(row, "refused" if refusal else "skipped", verdict, row["destination"]))
        image_goes = head is not None or (bool(live) and live[0]["action"] == unit)
        if not image_goes:
            final += [self._done(r, "skipped", self._left_with_image(unit), r["destination"]) for r in live]
            return _Prepared(final, [])
        try:
            targets = self._destinations(live)
        except Skip as exc:
            return _Prepared(final + [self._done(r, "skipped", str(exc), r["destination"]) for r in live], [])
        except DupflowError as exc:
            return _Prepared(final + [self._done(r, "failed", redact(str(exc)), r["destination"]) for r in live], [])
        return _Prepared(final, list(zip(live, targets, strict=True)))

    def _source_problem(self, row: dict[str, Any]) -> str | Done | None:
        """Why this file cannot move now (a reason, or a final `already` record), or None if it can."""
        info = self.files.info(row["source"])
        if info is None:
            if self._already_there(row):
                return self._done(row, self.already_word, None, row["destination"], row["size"], row["sha256"])
            return "source missing"
        if info.get("type") == "link":
            return "source is a symbolic link: dupflow moves files, not links"
        if info.get("type", "file") != "file":
            return "source is not a file"
        if self.mode == "undo" and row["size"] is not None and int(info.get("size", -1)) != row["size"]:
            return f"changed since it was moved: its size is {info.get('size')}, the journal recorded {row['size']}"
        mtime = row["mtime"]
        mtime_ns = int(mtime.timestamp() * 1_000_000) * 1000 if mtime is not None else None
        return self.files.stale_reason(info, row["size"], mtime_ns, row["etag"])

    def _already_there(self, row: dict[str, Any]) -> bool:
        if not self.files.exists(row["destination"]):
            return False
        there = self.files.digest(row["destination"])
        return there.sha256 == row["sha256"] if row["sha256"] else row["size"] in (None, there.size)

    def _destinations(self, live: list[dict[str, Any]]) -> list[str]:
        """Where each file goes: the planned destinations, or with `suffix`, the first free `.dupN` names."""
        planned = [r["destination"] for r in live]
        taken = [d for d in planned if self.files.exists(d)]
        if not taken:
            return planned
        if self.options.on_conflict == "skip" or self.mode == "undo":
            what = "destination exists" if self.mode == "apply" else "the original place is taken"
            raise Skip(f"{what}: {taken[0]}")
        image = live[0]
        for n in range(1, _MAX_SUFFIX):
            if image["kind"] == "image":
                new_image = suffixed(image["destination"], n)
                old_name, new_name = image["destination"].rsplit("/", 1)[1], new_image.rsplit("/", 1)[1]
                names = [new_image] + [f"{parent(d)}/{sidecar_name(old_name, d.rsplit('/', 1)[1], new_name)}"
                                       for d in planned[1:]]
            else:
                names = [suffixed(d, n) for d in planned]
            if not any(self.files.exists(d) for d in names):
                return names
        raise Skip(f"destination exists, and so do its first {_MAX_SUFFIX} .dupN alternatives")

    def _leaves_root(self, dst: str) -> str | None:
        """Why an apply must not write `dst` (a symbolic link on its way leads out of the root), or None."""
        if self.mode != "apply":
            return None
        fs, path = self.files.locate(dst)
        if is_local(fs) and local_escapes(self.root, path):
            return f"destination {dst} leaves the duplicates root {redact(self.root)} through a symbolic link"
        return None

    def _left_with_image(self, unit: int) -> str:
        """Why a sidecar stays: its image did not go (a sidecar moves, and goes back, only with its image)."""
        if self.mode == "apply":
            return "its image was not moved"
        return f"its image was not restored to {self.rows[unit]['destination']}; a sidecar goes back only with it"

    def _perform(self, todo: list[tuple[dict[str, Any], str]]) -> list[Done]:
        """Move one image, then its sidecars (only if the image moved)."""
        out: list[Done] = []
        going = True
        for row, dst in todo:
            if not going:
                out.append(self._done(row, "skipped", self._left_with_image(todo[0][0]["unit"]), dst))
                continue
            try:
                moved: Moved = self.files.move(row["source"], dst, row["sha256"], self._tag(row))
                out.append(self._done(row, self.moved_word, None, dst, moved.size, moved.sha256))
            except Skip as exc:
                out.append(self._done(row, "skipped", str(exc), dst))
            except FileNotFoundError:
                out.append(self._done(row, "skipped", "source missing", dst))
            except DupflowError as exc:
                out.append(self._done(row, "failed", redact(str(exc)), dst))
            going = out[-1].outcome == self.moved_word or row["kind"] != "image"
            fault_point("apply.file-done")
        return out

    # -- records and results ---------------------------------------------------------------------
    def _tag(self, row: dict[str, Any]) -> str:
        return f"{self.run}-{row['action']}"

    def _done(self, row: dict[str, Any], outcome: str, reason: str | None, dst: str, size: int | None = None,
              sha256: str | None = None) -> Done:
        if self.mode == "undo" and reason in _UNDO_REASONS:
            reason = _UNDO_REASONS[reason].format(source=row["source"], destination=dst)
        return Done(run=self.run, action=row["action"], outcome=outcome, destination=dst, reason=reason, size=size,
                    sha256=sha256, kind=row["kind"])

    def _results(self) -> pa.Table:
        rows = []
        for row in self.rows:
            rec = self.done.get(row["action"]) or self._done(row, "failed", "no outcome recorded", row["destination"])
            rows.append({"action": row["action"], "unit": row["unit"], "kind": row["kind"], "source": row["source"],
                         "destination": rec.destination, "outcome": rec.outcome, "reason": rec.reason,
                         "size": rec.size if rec.size is not None else row["size"], "sha256": rec.sha256})
        return pa.Table.from_pylist(rows, schema=APPLY_RESULTS)


def _batches(units: list[int], members: dict[int, list[dict[str, Any]]], size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    files = 0
    for u in units:
        batch.append(u)
        files += len(members[u])
        if files >= size:
            yield batch
            batch, files = [], 0
    if batch:
        yield batch


def _counts(results: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in results["outcome"].to_pylist():
        counts[outcome] = counts.get(outcome, 0) + 1
    return dict(sorted(counts.items()))
