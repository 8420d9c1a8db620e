#!/usr/bin/env python3
"""scripts/plan_audit/audit.py — the plan audit's steps that need Python (run.sh calls them).

    audit.py schema SQL.tsv MIGRATE DB       the schema: migrate.c plus SCHEMA_FROM_SOURCE
    audit.py plans SQL.tsv DB ANALYZED WORK RUNS
                                             plans, timings, steps; exit 0 clean, 1 findings

`plans` matches every extracted literal to statements.py, plans each audited statement with
EXPLAIN QUERY PLAN on DB (no statistics, as the services run) and on ANALYZED (the same data
after ANALYZE: a plan that changes there is reported, not failed), times each case (median
of RUNS, each inside BEGIN IMMEDIATE .. ROLLBACK, so the data never changes), counts the
virtual-machine steps of each hot or periodic case (once more, the same way), prints the
table and writes WORK/plans.txt (every plan in full) and WORK/not_planned.txt."""
import csv
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statements as st  # noqa: E402  (beside this file, whatever the working directory)

KEYWORDS = {'WHERE', 'SET', 'ORDER', 'GROUP', 'LIMIT', 'ON', 'USING', 'INDEXED', 'NOT', 'LEFT',
            'JOIN', 'INNER', 'CROSS', 'VALUES', 'SELECT', 'DEFAULT', 'AS', 'RETURNING', 'WINDOW'}


def read_tsv(path):
    with open(path, newline='') as f:
        return [(r[0], int(r[1]), r[2]) for r in csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE)]


def split_statements(text):
    """A literal may hold several statements (a migration step): split at ';' outside quotes
    and PostgreSQL's $$ bodies."""
    out, cur, i, quote = [], [], 0, None
    while i < len(text):
        if quote is None and text.startswith('$$', i):
            quote, cur, i = '$$', cur + ['$$'], i + 2
            continue
        if quote == '$$' and text.startswith('$$', i):
            quote, cur, i = None, cur + ['$$'], i + 2
            continue
        c = text[i]
        if quote is None and c in '\'"':
            quote = c
        elif quote == c:
            quote = None
        if c == ';' and quote is None:
            out.append(''.join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append(''.join(cur).strip())
    return [s for s in out if s]


def classify(rows):
    """-> (audited: [(entry, sql, [lines])], skipped: [(file, line, sql, why)],
    unlabelled: [(file, line, sql)], stale: [entry], errors: [text])."""
    skipped, unlabelled, errors, found = [], [], [], {}
    for f, line, text in rows:
        for sql in split_statements(text):
            why = next((w for rx, w in st.NOT_PLANNED if re.search(rx, sql)), None)
            if why:
                skipped.append((f, line, sql, why))
                continue
            hits = [i for i, e in enumerate(st.STATEMENTS) if e['file'] == f and e['match'] in sql]
            if len(hits) != 1:
                if hits:
                    errors.append(f'{f}:{line}: matched by {len(hits)} entries of statements.py: '
                                  + ', '.join(repr(st.STATEMENTS[i]['match']) for i in hits))
                unlabelled.append((f, line, sql))
                continue
            found.setdefault(hits[0], {}).setdefault(sql, []).append(line)
    audited = []
    for i, by_sql in sorted(found.items()):
        if len(by_sql) > 1:  # one entry, two different texts: which one is the label about?
            errors.append(f"{st.STATEMENTS[i]['file']}: {st.STATEMENTS[i]['match']!r} matches "
                          f'{len(by_sql)} different statements; make it longer')
        for sql, lines in by_sql.items():
            audited.append((st.STATEMENTS[i], sql, sorted(set(lines))))
    stale = [e for i, e in enumerate(st.STATEMENTS) if i not in found]
    return audited, skipped, unlabelled, stale, errors


def cmd_schema(tsv, migrate, db):
    rows = read_tsv(tsv)
    args = []
    for table, f in st.SCHEMA_FROM_SOURCE:
        ddl = [t for ff, _, t in rows if ff == f and re.match(rf'CREATE TABLE {table}\b', t)]
        if len(ddl) != 1:
            print(f'audit: {len(ddl)} "CREATE TABLE {table}" literals in {f} (want 1)', file=sys.stderr)
            return 1
        args += [table, ddl[0]]
    return subprocess.run([migrate, db] + args).returncode


def plan(conn, sql, params):
    """EXPLAIN QUERY PLAN as indented lines."""
    depth, lines = {0: -1}, []
    for id_, parent, _, detail in conn.execute('EXPLAIN QUERY PLAN ' + sql, params):
        depth[id_] = depth.get(parent, -1) + 1
        lines.append('  ' * depth[id_] + detail)
    return lines


def aliases(sql):
    """alias -> table, for plan lines that name "hd_outbox o" as o."""
    out = {}
    for m in re.finditer(r'\b(?:FROM|JOIN|UPDATE|INTO)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?', sql, re.I):
        out[m.group(1)] = m.group(1)
        if m.group(2) and m.group(2).upper() not in KEYWORDS:
            out[m.group(2)] = m.group(1)
    return out


def problems(sql, lines, allow):
    """The gate: (plan line, why) for each SCAN of a growing table not through a backlog
    index nor allowed, and each temp B-tree."""
    names, out = aliases(sql), []
    for raw in lines:
        line = raw.strip()
        if 'TEMP B-TREE' in line:
            out.append((line, 'temp B-tree: sorts every row the statement reads'))
            continue
        m = re.match(r'SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?', line)
        if not m or names.get(m.group(1), m.group(1)) not in st.GROWING:
            continue
        if m.group(2) in st.BACKLOG_INDEXES or any(piece in line for piece, _ in allow):
            continue
        out.append((line, f'scan of {names.get(m.group(1), m.group(1))}, a growing table'))
    return out


def too_much_work(steps, rows, allow):
    """The work gate: None under STEPS_PER_ROW; ('allowed', why) over it with a (STEPS, why)
    allow entry; else (what, why) as problems() gives them."""
    r = per_row(steps, rows)
    if r <= st.STEPS_PER_ROW:
        return None
    why = next((w for piece, w in allow if piece == st.STEPS), None)
    if why:
        return 'allowed', why
    return (f'{steps} VM steps for {rows} rows: {r:.0f} steps/row',
            f'over {st.STEPS_PER_ROW}: reads rows it filters away (an index range too wide?)')


def summary(lines):
    """One short line of a plan: each table access and sort."""
    out = []
    for raw in lines:
        line = raw.strip()
        m = re.match(r'(SCAN|SEARCH) (\w+)(?: USING (COVERING )?INDEX (\w+)| USING (INTEGER )?PRIMARY KEY)?', line)
        if line.startswith('USE TEMP B-TREE'):
            out.append('TEMP B-TREE ' + line.split(' FOR ', 1)[-1])
        elif line.startswith('MULTI-INDEX OR'):
            out.append('MULTI-INDEX OR')
        elif m and m.group(2) != 'CONSTANT':
            via = m.group(4) or ('rowid' if m.group(5) else 'pk' if 'PRIMARY KEY' in line else '')
            out.append(f'{m.group(1)} {m.group(2)}' + (f':{via}' if via else ''))
        elif line == 'SCAN CONSTANT ROW':
            out.append('constant row')
    return ', '.join(out) or '-'


def timed(conn, sql, params, runs):
    ts = []
    for _ in range(runs):
        conn.execute('BEGIN IMMEDIATE')
        try:
            t = time.perf_counter()
            conn.execute(sql, params).fetchall()
            ts.append((time.perf_counter() - t) * 1000)
        finally:
            conn.execute('ROLLBACK')
    return statistics.median(ts)


def counted(conn, sql, params):
    """(VM steps, rows returned or changed) of one run inside BEGIN IMMEDIATE .. ROLLBACK.
    A progress handler called every instruction is called exactly as many times as
    sqlite3_stmt_status(SQLITE_STMTSTATUS_VM_STEP) counts (Python's sqlite3 has no stmt
    status): work, not time, so the same rows give the same count on any machine. Run after
    timed(), so the statement is prepared and cached: preparing is not counted. Changed rows
    are total_changes, which counts the rows foreign-key cascades delete too."""
    steps = 0

    def tick():
        nonlocal steps
        steps += 1
        return 0  # non-zero would interrupt the statement
    conn.execute('BEGIN IMMEDIATE')
    try:
        before = conn.total_changes
        conn.set_progress_handler(tick, 1)
        rows = len(conn.execute(sql, params).fetchall())
        return steps, max(rows, conn.total_changes - before)  # RETURNING: the same rows
    finally:
        conn.set_progress_handler(None, 1)
        conn.execute('ROLLBACK')


def per_row(steps, rows):
    """Steps per row returned or changed, plus one: a lookup that finds nothing divides by 1."""
    return steps / (rows + 1)


def resolve(conn, values):
    out = {}
    for i, v in enumerate(values):
        if isinstance(v, st.Q):
            row = conn.execute(v).fetchone()
            if row is None:
                raise ValueError(f'no row for {v}')
            v = row[0]
        out[str(i + 1)] = v
    return out


def connect(db):
    c = sqlite3.connect(db, isolation_level=None)
    c.execute('PRAGMA foreign_keys = ON')  # as store_sqlite.c opens it: cascades cost
    return c


def short(f):
    return f.replace('src/', '', 1).replace('services/', '', 1)


def cmd_plans(tsv, db, analyzed, work, runs):
    runs = int(runs)
    audited, skipped, unlabelled, stale, errors = classify(read_tsv(tsv))
    conn, conn_a = connect(db), connect(analyzed)
    if sqlite3.sqlite_version != os.environ.get('PLAN_AUDIT_LIBSQLITE', sqlite3.sqlite_version):
        print(f"audit: note: Python's SQLite is {sqlite3.sqlite_version}, the services link "
              f"{os.environ['PLAN_AUDIT_LIBSQLITE']}: plans may differ")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for t in sorted(tables - set(st.GROWING) - set(st.BOUNDED)):
        errors.append(f'table {t} is neither GROWING nor BOUNDED in statements.py')
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    for ix in sorted(set(st.BACKLOG_INDEXES) - indexes):
        errors.append(f'BACKLOG_INDEXES names {ix}, which the schema does not have')

    bad, changed, table = [], [], []
    with open(os.path.join(work, 'plans.txt'), 'w') as full:
        for e, sql, lines in audited:
            loc = f"{short(e['file'])}:{','.join(map(str, lines))}"
            full.write(f"=== {loc} [{e['label']}] {e['what']}\nSQL: {sql}\n")
            for c in e['cases']:
                text = sql + c['tail']
                name = e['what'] + (f" [{c['name']}]" if c['name'] else '')
                gated = e['label'] in st.GATED
                try:
                    p = resolve(conn, c['params'])
                    lines_n, lines_a = plan(conn, text, p), plan(conn_a, text, p)
                    ms = timed(conn, text, p, runs)
                    steps, rows = counted(conn, text, p) if gated else (None, None)
                except (sqlite3.Error, ValueError) as x:
                    errors.append(f'{loc} {name}: {x}')
                    full.write(f'  case {c["name"] or "-"}: ERROR {x}\n')
                    continue
                found = problems(text, lines_n, e['allow']) if gated else []
                allowed = [(p, why) for p, why in e['allow'] if gated and any(p in l for l in lines_n)]
                heavy = too_much_work(steps, rows, e['allow']) if gated else None
                if heavy and heavy[0] == 'allowed':
                    allowed.append((st.STEPS, heavy[1]))
                elif heavy:
                    found.append(heavy)
                mark = '!!' if found else ('~' if lines_a != lines_n else '*' if allowed else '')
                table.append((mark, loc + (f" [{c['name']}]" if c['name'] else ''), e['label'],
                              f'{ms:.3f}', '-' if steps is None else f'{per_row(steps, rows):.1f}',
                              summary(lines_n)))
                full.write(f"  case {c['name'] or '-'}: {ms:.3f} ms (median of {runs})"
                           + ('' if steps is None else
                              f'; {steps} VM steps, {rows} rows: {per_row(steps, rows):.1f} steps/row')
                           + (f"\n  tail: {c['tail']}" if c['tail'] else '') + '\n'
                           + ''.join(f'    {l}\n' for l in lines_n))
                for piece, why in allowed:
                    full.write(f'  allowed: {piece}: {why}\n')
                if lines_a != lines_n:
                    changed.append((loc, name))
                    full.write('  after ANALYZE the plan is:\n' + ''.join(f'    {l}\n' for l in lines_a))
                if found:
                    bad.append((loc, e, name, text, lines_n, found))
    with open(os.path.join(work, 'not_planned.txt'), 'w') as o:
        for f, line, sql, why in skipped:
            o.write(f'{f}:{line}\t{why}\t{sql}\n')

    w = max(len(r[1]) for r in table) if table else 10
    print(f"{'':2} {'statement':<{w}} {'label':<8} {'ms':>9} {'steps/row':>9}  "
          'plan (no ANALYZE; plans.txt has it whole)')
    for mark, loc, label, ms, spr, plan_s in table:
        print(f'{mark:2} {loc:<{w}} {label:<8} {ms:>9} {spr:>9}  {plan_s}')
    reasons = {}
    for *_, why in skipped:
        reasons[why] = reasons.get(why, 0) + 1
    print(f'\n{len(audited)} statements audited ({len(table)} cases); {len(skipped)} not planned: '
          + '; '.join(f'{n} {why.split(":")[0]}' for why, n in reasons.items()))
    print("!! a bad plan or too much work on a hot or periodic path (below); * a scan or work "
          "that statements.py allows")
    print(f'steps/row: VM steps per row returned or changed, plus one (hot and periodic only; '
          f'gate: over {st.STEPS_PER_ROW})')
    if changed:
        print('~ plan changes after ANALYZE (the services never run it; not a failure): '
              + '; '.join(f'{l} {n}' for l, n in changed))
    for loc, e, name, text, lines_n, found in bad:
        print(f"\nBAD PLAN on a {e['label']} path: {e['file']}:{loc.split(':')[1]} {name}\n  SQL: {text}\n  plan:")
        print(''.join(f'    {l}\n' for l in lines_n), end='')
        for line, why in found:
            print(f'  -> {line}: {why}')
    for f, line, sql in unlabelled:
        print(f'\nUNLABELLED: {f}:{line}: {sql}\n  label it in scripts/plan_audit/statements.py')
    for e in stale:
        print(f"\nSTALE LABEL: {e['file']}: no statement contains {e['match']!r}")
    for x in errors:
        print(f'\nERROR: {x}')
    fail = len(bad) + len(unlabelled) + len(stale) + len(errors)
    print(f"\nplan audit: {'FAIL' if fail else 'ok'}: {len(bad)} bad plans on hot/periodic paths, "
          f'{len(unlabelled)} unlabelled, {len(stale)} stale labels, {len(errors)} errors '
          f'(full plans: {work}/plans.txt)')
    return 1 if fail else 0


def main():
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == 'schema':
        return cmd_schema(*a[1:])
    if len(a) == 6 and a[0] == 'plans':
        return cmd_plans(*a[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main())
