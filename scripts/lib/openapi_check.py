#!/usr/bin/env python3
"""scripts/lib/openapi_check.py — a running herald service against its OpenAPI document: every
documented path and method answers with a documented status, and every error is
application/problem+json. For the shell tests (tests/integration/test_users_http.sh,
test_users_messages.sh).

    python3 scripts/lib/openapi_check.py SPEC BASE_URL ADMIN_TOKEN [--methods get,post]
                                         [--unauthenticated secured|all]

Each operation is called with the bearer token, and once more without it: for the operations
that declare `security` (secured, the default) or for all of them (all). A POST or PATCH
sends "{}". {id} in a path becomes a random-looking UUID. Prints one line a request and a
total; exits 1 on a mismatch or when nothing was called."""
import argparse
import re
import sys
import urllib.error
import urllib.request

ALL_METHODS = ('get', 'post', 'put', 'patch', 'delete')


def load(text):
    """paths -> method -> (documented statuses, needs admin). PyYAML when installed, else a
    reader for the layout of users.yaml (2-space indentation, quoted status codes)."""
    try:
        import yaml
    except ImportError:
        yaml = None
    out = {}
    if yaml:
        doc = yaml.safe_load(text)
        for p, item in doc['paths'].items():
            for m, op in item.items():
                if m in ALL_METHODS:
                    out.setdefault(p, {})[m] = ({str(k) for k in op['responses']},
                                                bool(op.get('security')))
        return out
    in_paths, p, m, section = False, None, None, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        ind, s = len(line) - len(line.lstrip()), line.strip()
        if ind == 0:
            in_paths = s == 'paths:'
        elif in_paths and ind == 2:
            p, m = s.rstrip(':'), None
        elif in_paths and ind == 4 and s.rstrip(':') in ALL_METHODS:
            m = s.rstrip(':')
            out.setdefault(p, {})[m] = (set(), False)
        elif in_paths and m and ind == 6:
            section = s.rstrip(':')
            if section == 'security':
                out[p][m] = (out[p][m][0], True)
        elif in_paths and m and ind == 8 and section == 'responses':
            code = re.match(r"'?(\d{3})'?:", s)
            if code:
                out[p][m][0].add(code.group(1))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('spec')
    ap.add_argument('base')
    ap.add_argument('admin')
    ap.add_argument('--methods', default=','.join(ALL_METHODS))
    ap.add_argument('--unauthenticated', choices=('secured', 'all'), default='secured')
    a = ap.parse_args()
    methods = a.methods.split(',')
    ops = load(open(a.spec).read())
    n = bad = 0
    for p, by_method in sorted(ops.items()):
        for m, (codes, secured) in sorted(by_method.items()):
            if m not in methods:
                continue
            url = a.base + p.replace('{id}', '00000000-0000-4000-8000-000000000000')
            tries = [('with token', {'Authorization': 'Bearer ' + a.admin})]
            if secured or a.unauthenticated == 'all':
                tries.append(('without token', {}))
            for label, headers in tries:
                body = None
                if m in ('post', 'patch'):
                    body, headers = b'{}', dict(headers, **{'Content-Type': 'application/json'})
                req = urllib.request.Request(url, data=body, method=m.upper(), headers=headers)
                try:
                    with urllib.request.urlopen(req) as r:
                        status, ctype = r.status, r.headers.get('Content-Type', '')
                except urllib.error.HTTPError as e:
                    status, ctype = e.code, e.headers.get('Content-Type', '')
                n += 1
                verdict = 'ok'
                if str(status) not in codes:
                    verdict, bad = 'UNDOCUMENTED STATUS (documented: %s)' % sorted(codes), bad + 1
                elif status >= 400 and not ctype.startswith('application/problem+json'):
                    verdict, bad = 'error without problem+json: ' + ctype, bad + 1
                print('%-6s %-24s %-14s -> %d %s' % (m.upper(), p, label, status, verdict))
    print('openapi: %d requests, %d operations documented, %d mismatches'
          % (n, sum(len(v) for v in ops.values()), bad))
    sys.exit(1 if bad or n == 0 else 0)


if __name__ == '__main__':
    main()
