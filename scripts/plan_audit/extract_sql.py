#!/usr/bin/env python3
"""scripts/plan_audit/extract_sql.py — every SQL string literal of src/, after the preprocessor.

    python3 extract_sql.py REPO BUILD_DIR OUT.tsv
    python3 extract_sql.py --compile BUILD_DIR LIKE.c SRC.c OUT.o

Each src/**/*.c is preprocessed with its own flags from BUILD_DIR/compile_commands.json, so
macros (CLAIM_SQL, PURGE_SQL, COLUMNS, ...) are expanded exactly as the build expands them and
a file that needs libpq's headers gets them. Adjacent literals are joined, as the compiler
joins them. A literal counts as SQL when it starts with an upper-case SQL keyword. Writes
one line a literal: file, line of its first piece (for a macro, the line that uses it), text. Exits 1
when a file of src/ is not in the build or does not preprocess: a file left out is a
statement left unaudited.

--compile compiles SRC.c with the flags the build gives LIKE.c (run.sh: fresh objects of the
files whose migrations make the schema, and migrate.c with a service file's include path)."""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

# Upper case, as all of herald's SQL is written: lower-case prose ("delete queue '%s'") is not SQL.
SQL = re.compile(r'\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|WITH|CREATE|ALTER|DROP|PRAGMA|BEGIN|COMMIT|'
                 r'ROLLBACK|SAVEPOINT|RELEASE|VACUUM|ANALYZE|REINDEX|EXPLAIN|LISTEN|UNLISTEN|NOTIFY|'
                 r'TRUNCATE|LOCK|SET|SHOW)(\s|\(|$)')
# cpp's line markers, string literals (with a prefix such as u8), char literals, anything else.
MARKER = re.compile(r'^# (\d+) "((?:[^"\\]|\\.)*)"')
TOKEN = re.compile(r'(?:u8|[uUL])?"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\S')


def unescape(body):
    # C escapes in SQL text are \" \\ \n \t at most; latin-1 keeps any other byte as it is.
    return body.encode('latin-1', 'backslashreplace').decode('unicode_escape')


def flags(entry, mode=('-E',), src=None):
    """The compile command of one file without its -o, -c and source: for cpp (-E) by
    default, or to compile src with the same flags."""
    args = entry.get('arguments') or shlex.split(entry['command'])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == '-o':
            skip = True
        elif a == '-c' or a == entry['file'] or os.path.join(entry['directory'], a) == entry['file']:
            continue
        elif a.startswith('-W') and mode == ('-E',):
            continue  # warnings (and -Werror) mean nothing to cpp
        else:
            out.append(a)
    return out + list(mode) + [src or entry['file']]


def commands(build):
    """compile_commands.json by absolute source path; a file built for two targets keeps its
    first command (same macros either way)."""
    by_file = {}
    for e in json.load(open(os.path.join(build, 'compile_commands.json'))):
        f = os.path.normpath(os.path.join(e['directory'], e['file']))
        by_file.setdefault(f, dict(e, file=f))
    return by_file


def compile_like(build, like, src, out):
    e = commands(build).get(os.path.abspath(like))
    if e is None:
        sys.exit(f'extract_sql: {like} is not in {build}/compile_commands.json')
    cmd = flags(e, ('-c', '-o', os.path.abspath(out)), os.path.abspath(src))
    return subprocess.run(cmd, cwd=e['directory']).returncode


def literals(path, cpp_out):
    """(line, text) of every run of adjacent string literals that cpp put in path itself."""
    found, run, run_line, cur_file, cur_line = [], [], 0, None, 0

    def flush():
        if run and cur_file == path:
            found.append((run_line, ''.join(run)))
        run.clear()

    for raw in cpp_out.split('\n'):
        m = MARKER.match(raw)
        if m:
            cur_line, cur_file = int(m.group(1)), m.group(2)
            continue
        for tok in TOKEN.finditer(raw):
            t = tok.group(0)
            if t.endswith('"') and '"' in t[:-1]:
                if not run:
                    run_line = cur_line
                run.append(unescape(t[t.index('"') + 1:-1]))
            else:
                flush()
        cur_line += 1
    flush()
    return found


def main():
    if len(sys.argv) == 6 and sys.argv[1] == '--compile':
        return compile_like(*sys.argv[2:])
    if len(sys.argv) != 4:
        sys.exit('usage: extract_sql.py REPO BUILD_DIR OUT.tsv | --compile BUILD_DIR LIKE.c SRC.c OUT.o')
    repo, build, out_path = (os.path.abspath(a) for a in sys.argv[1:])
    by_file = commands(build)
    sources = sorted(glob.glob(os.path.join(repo, 'src', '**', '*.c'), recursive=True))
    rows, bad = [], 0
    for f in sources:
        rel = os.path.relpath(f, repo)
        if f not in by_file:
            print(f'extract_sql: {rel} is not in {build}/compile_commands.json', file=sys.stderr)
            bad += 1
            continue
        e = by_file[f]
        pp = subprocess.run(flags(e), cwd=e['directory'], capture_output=True, text=True,
                            errors='replace')
        if pp.returncode:
            print(f'extract_sql: cpp failed on {rel}:\n{pp.stderr[:500]}', file=sys.stderr)
            bad += 1
            continue
        for line, text in literals(f, pp.stdout):
            if SQL.match(text):
                rows.append((rel, line, ' '.join(text.split())))
    with open(out_path, 'w') as o:
        for rel, line, text in rows:
            o.write(f'{rel}\t{line}\t{text}\n')
    print(f'extract_sql: {len(rows)} SQL literals in {len(sources)} files')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
