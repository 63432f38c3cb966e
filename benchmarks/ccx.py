"""Dimagi's commcare-export, run side by side with commcare-etl by bench_sync.py --compare.

Only runs the tool (never imports or copies its code): finds a `commcare-export` (a venv given
by --ccx-venv, the PATH, or a venv it installs under ~/.cache/commcare-etl-bench/), writes the
Excel query both tools are measured on, and checks what landed in PostgreSQL.

The query: sheet "cases" (Data Source `case`) and sheet "forms" (Data Source `form`), each with
fields `id` (Source Field `id`) and `json` (Source Field `$`, Map Via `json2str`). In
commcare-export's Excel queries a sheet's Map binds each document as the JSONPath root, so `$` is
the whole document, and `json2str` is `json.dumps` of it.

Standalone, with any Python that has openpyxl (commcare-export's own does):

    python benchmarks/ccx.py query.xlsx
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

VERSION = "1.16"  # the release measured against
PIP_SPEC = ["commcare-export==1.16.*", "psycopg2-binary"]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "commcare-etl-bench"
HEADINGS = ["Data Source", "Field", "Source Field", "Map Via"]
# sheet (= table) -> data source; each gets the same two fields
SHEETS = {"cases": "case", "forms": "form"}
FIELDS = [("id", "id", None), ("json", "$", "json2str")]


# --- the query ---------------------------------------------------------------------------------

def query_rows() -> dict[str, list[list[Any]]]:
    """The query's sheets as rows (headings first): what `write_query` puts in the workbook."""
    sheets = {}
    for sheet, source in SHEETS.items():
        rows = [list(HEADINGS)]
        for n, (field, source_field, map_via) in enumerate(FIELDS):
            rows.append([source if n == 0 else None, field, source_field, map_via])
        sheets[sheet] = rows
    return sheets


def write_query(path: Path, python: str | None = None) -> Path:
    """Write the Excel query to `path` with openpyxl: in this process when it can import
    openpyxl, else with `python` (commcare-export's interpreter, which has it)."""
    import importlib.util

    path = Path(path)
    if importlib.util.find_spec("openpyxl") is None and python is not None:
        subprocess.run([python, str(Path(__file__).resolve()), str(path)], check=True)
    else:
        _write_workbook(path)
    return path


def _write_workbook(path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for sheet, rows in query_rows().items():
        ws = book.create_sheet(sheet)
        for row in rows:
            ws.append(row)
    book.save(path)


def read_query(path: Path) -> dict[str, list[list[Any]]]:
    """The sheets of a written query as rows (needs openpyxl): for checking `write_query`."""
    import openpyxl

    book = openpyxl.load_workbook(path)
    return {ws.title: [list(row) for row in ws.iter_rows(values_only=True)]
            for ws in book.worksheets}


# --- finding or installing commcare-export -----------------------------------------------------

class NotAvailable(RuntimeError):
    """No commcare-export could be found (or installed, when that was allowed)."""


def find(venv: Path | None = None, cache_dir: Path = CACHE_DIR,
         install: bool = True) -> Path:
    """The `commcare-export` executable: in `venv` if given, else on the PATH, else in the cache
    dir's venv, else (with `install`) installed there with pip from PyPI."""
    if venv is not None:
        exe = Path(venv) / "bin" / "commcare-export"
        if not exe.exists():
            raise NotAvailable(f"no {exe}")
        return exe
    on_path = shutil.which("commcare-export")
    if on_path:
        return Path(on_path)
    cached = Path(cache_dir) / "ccx-venv"
    exe = cached / "bin" / "commcare-export"
    if exe.exists():
        return exe
    if not install:
        raise NotAvailable(f"commcare-export is not on the PATH nor in {cached}")
    print(f"installing commcare-export {VERSION} into {cached} ...", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(cached)], check=True)
        subprocess.run([str(cached / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        *PIP_SPEC], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(cached, ignore_errors=True)
        raise NotAvailable(f"could not install commcare-export: {exc}") from exc
    if not exe.exists():
        raise NotAvailable(f"pip installed no {exe}")
    return exe


def interpreter(exe: Path) -> str:
    """The Python that runs the `commcare-export` script (its venv's, or its shebang's)."""
    sibling = Path(exe).parent / "python"
    if sibling.exists():
        return str(sibling)
    first = Path(exe).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    if first.startswith("#!"):
        return first[2:].strip().split()[0]
    return sys.executable


def version(exe: Path, cwd: Path) -> str:
    out = subprocess.run([str(exe), "--version", "--no-logfile"], capture_output=True,
                         text=True, cwd=cwd, timeout=120)
    match = re.search(r"version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


# --- running it ---------------------------------------------------------------------------------

def output_url(db_url: str, schema: str) -> str:
    """commcare-export's `--output`: the SQLAlchemy psycopg2 URL of `db_url`, with `schema`
    first on the search path (it writes its tables and checkpoints into the default schema)."""
    parts = urlsplit(db_url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://...")
    option = "options=" + quote(f"-csearch_path={schema}", safe="")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit(("postgresql+psycopg2", parts.netloc, parts.path, query, parts.fragment))


def command(exe: Path, query: Path, base_url: str, project: str, username: str, api_key: str,
            output: str, batch_size: int | None = None) -> list[str]:
    cmd = [str(exe), "--query", str(query), "--project", project, "--commcare-hq", base_url,
           "--auth-mode", "apikey", "--username", username, "--password", api_key,
           "--output-format", "sql", "--output", output, "--no-logfile"]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    return cmd


def failure(returncode: int, stdout: str, stderr: str) -> str | None:
    """Why a run failed, or None. commcare-export exits 0 after some errors (an HTTP error
    ends it with a bare sys.exit()), so its output is read too; the tables are checked after."""
    if returncode != 0:
        return f"exit status {returncode}"
    if "Error occurred" in stdout:
        return "it printed 'Error occurred'"
    for line in stderr.splitlines():
        if re.search(r"\b(Traceback|Error|error:|Stopping because)", line):
            return line.strip()[:300]
    return None


# --- checking what it wrote --------------------------------------------------------------------

def expected(records: Iterable[Any], kind: str) -> dict[str, Any]:
    """What commcare-export should end up with: every case; forms not archived (the v0.5 form
    list leaves archived forms out unless asked with include_archived, which it never sends)."""
    return {r.id: r for r in records if kind == "case" or not r.archived}


def compare(rows: Iterator[tuple[str, str]], wanted: Mapping[str, Any],
            doc_of: Any) -> dict[str, Any]:
    """Check a table's (id, json) rows against `wanted` (id -> record): every record there
    exactly once, nothing else, and each json equal to the document (`doc_of(record)`) as
    served. Returns counts and a few examples of what differs."""
    seen: set[str] = set()
    rows_n = duplicates = extra = mismatched = 0
    examples: list[str] = []
    for record_id, text in rows:
        rows_n += 1
        if record_id in seen:
            duplicates += 1
            continue
        seen.add(record_id)
        record = wanted.get(record_id)
        if record is None:
            extra += 1
            if len(examples) < 3:
                examples.append(f"unexpected id {record_id}")
            continue
        try:
            got = json.loads(text) if text is not None else None
        except ValueError:
            got = None
        if got != doc_of(record):
            mismatched += 1
            if len(examples) < 3:
                examples.append(f"json of {record_id} differs from the served document")
    missing = [i for i in wanted if i not in seen]
    examples += [f"missing id {i}" for i in missing[:3 - min(3, len(examples))]]
    return {"rows": rows_n, "expected": len(wanted), "missing": len(missing),
            "extra": extra, "duplicates": duplicates, "json_mismatches": mismatched,
            "ok": not (missing or extra or duplicates or mismatched), "examples": examples}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/ccx.py QUERY.xlsx")
    _write_workbook(Path(sys.argv[1]))
