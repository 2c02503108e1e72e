#!/usr/bin/env python3
"""Checker of the power-cut test: check.py PHASE MODE MOUNTPOINT CONSOLE_LOG

Reads what the guest sent (FILE lines) and what was acknowledged (ACKED lines: scp
exited 0) from the console log of the power-cut boot, inspects the cut disk (mounted
read-only at MOUNTPOINT) and prints one `RESULT key=value ...` line, then details.

PHASE cut   (right after the cut, before any restart)
  lost = an acknowledged file whose content (sha256) is under no final name: spool
         ready|archived|processed|quarantine/<id>/data, archive, forward dir
  torn = a file under a final name whose content is not what was sent under that name,
         or a spool/archive entry whose data does not match its record (size, BLAKE3)
  dup  = one sent file landed under more than one entry id
PHASE final (after the recovery boot drained the pipeline)
  every acknowledged file must be in the forward dir exactly once (one name
  `<id>__<name>`), with the content that was sent (sha256) and the BLAKE3 its record
  carries; and in the archive exactly once, matching its `.record.json`
  (size, BLAKE3). The spool must be drained (ready/archived/processed empty, nothing
  quarantined).
  lost = an acknowledged file missing from the forward dir or the archive
  torn = wrong content anywhere, a record mismatch, or an undrained spool
  dup  = an acknowledged file under more than one name in the forward dir or the
         archive, or landed under more than one entry id
MODE shell: the control loop's files in ctl/ (cut phase only).
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

phase, mode, mnt, log = sys.argv[1:5]
sent, acked = {}, {}
for raw in open(log, 'rb'):
    line = raw.decode('utf-8', 'replace').replace('\r', '').strip()
    m = re.match(r'^FILE (\S+) ([0-9a-f]{64}) (\d+)$', line)
    if m:
        sent[m[1]] = (m[2], int(m[3]))
    m = re.match(r'^ACKED (\S+) ([0-9a-f]{64})$', line)
    if m:
        acked[m[1]] = m[2]


def sha256(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        for b in iter(lambda: f.read(1 << 20), b''):
            h.update(b)
    return h.hexdigest()


def b3(p):
    return subprocess.run(['b3sum', '--no-names', p], capture_output=True, text=True,
                          check=True).stdout.split()[0]


found = defaultdict(list)   # sha256 -> final paths holding it
ids = defaultdict(set)      # sent name -> entry ids it landed under
out_names = defaultdict(list)      # sent name -> forward-dir names
arch_names = defaultdict(list)     # sent name -> archive paths
out_b3 = {}                 # sent name -> BLAKE3 of its forward-dir file
arch_b3 = {}                # sent name -> BLAKE3 from the archive's .record.json
torn, notes = [], []


def visible(rel, name, entry_id):
    p = os.path.join(mnt, rel)
    s = sha256(p)
    found[s].append(rel)
    if entry_id:
        ids[name].add(entry_id)
    if name in sent:
        if sent[name][0] != s:
            torn.append(f'{rel}: content differs from the sent {name} '
                        f'(size {os.path.getsize(p)} vs {sent[name][1]})')
    else:
        notes.append(f'{rel}: unknown name {name}')
    return s


def load_record(path):
    rec = json.load(open(path))
    rec['size'], rec['blake3'], rec['path']
    return rec


pending = []
if mode == 'shell':
    d = os.path.join(mnt, 'ctl')
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        visible(os.path.join('ctl', f), f, None)
else:
    sp = os.path.join(mnt, 'spool')
    for state in ('ready', 'archived', 'processed', 'quarantine'):
        sd = os.path.join(sp, state)
        for eid in sorted(os.listdir(sd)) if os.path.isdir(sd) else []:
            rel = os.path.join('spool', state, eid)
            pending.append(rel)
            try:
                rec = load_record(os.path.join(mnt, rel, 'record.json'))
            except Exception as e:  # noqa: BLE001
                torn.append(f'{rel}: record.json unreadable: {e!r}')
                continue
            dp = os.path.join(mnt, rel, 'data')
            if not os.path.isfile(dp):
                torn.append(f'{rel}: no data file')
                continue
            size = os.path.getsize(dp)
            if size != rec['size'] or b3(dp) != rec['blake3']:
                torn.append(f'{rel}: data (size {size}) does not match its record '
                            f'(size {rec["size"]}, blake3)')
            visible(os.path.join(rel, 'data'), rec['path'].rsplit('/', 1)[-1], eid)
    ad = os.path.join(mnt, 'archive')
    for root, dirs, files in os.walk(ad):
        for f in files:
            if f.startswith('.ingestd-') or f.endswith('.record.json'):
                continue
            full = os.path.join(root, f)
            rel = os.path.relpath(full, mnt)
            visible(rel, f, os.path.basename(root))
            arch_names[f].append(rel)
            rp = full + '.record.json'
            if not os.path.exists(rp):
                # the archive step writes data, then its record: a cut in between may
                # leave the data alone; after recovery the record must be there
                if phase == 'final':
                    torn.append(f'{rel}: no .record.json beside it')
                continue
            try:
                rec = load_record(rp)
                h = b3(full)
                arch_b3[f] = rec['blake3']
                if os.path.getsize(full) != rec['size'] or h != rec['blake3']:
                    torn.append(f'{rel}: does not match its .record.json')
            except Exception as e:  # noqa: BLE001
                torn.append(f'{rel}.record.json: unreadable ({os.path.getsize(rp)} bytes): {e!r}')
    od = os.path.join(mnt, 'out')
    for f in sorted(os.listdir(od)) if os.path.isdir(od) else []:
        if f.startswith('.ingestd-'):
            continue
        eid, _, name = f.partition('__')
        visible(os.path.join('out', f), name, eid)
        out_names[name].append(f)
        out_b3[name] = b3(os.path.join(od, f))

# temporary files a cut left behind (not a failure: they are under no final name);
# after recovery they show whether the node's startup sweep removes them
leftovers = []
if mode != 'shell':
    for root, dirs, files in os.walk(mnt):
        for f in files:
            if f.startswith('.ingestd-') or f.endswith('.tmp'):
                leftovers.append(os.path.relpath(os.path.join(root, f), mnt))
    pd = os.path.join(mnt, 'spool', 'partial')
    leftovers += [os.path.join('spool/partial', e) for e in (os.listdir(pd) if os.path.isdir(pd) else [])]
lost = defaultdict(list)    # acknowledged name -> why it counts as lost
for name, s in acked.items():
    if s not in found:
        lost[name].append('under no final name')
dup = [f'{n}: landed under ids {sorted(v)}' for n, v in ids.items() if len(v) > 1]
if phase == 'final' and mode != 'shell':
    for name, s in acked.items():
        if not out_names.get(name):
            lost[name].append('not in the forward dir')
        elif len(out_names[name]) > 1:
            dup.append(f'{name}: {len(out_names[name])} names in the forward dir: {out_names[name]}')
        if not arch_names.get(name):
            lost[name].append('not in the archive')
        elif len(arch_names[name]) > 1:
            dup.append(f'{name}: {len(arch_names[name])} copies in the archive')
        if name in out_b3 and name in arch_b3 and out_b3[name] != arch_b3[name]:
            torn.append(f'{name}: forward-dir BLAKE3 {out_b3[name]} != recorded {arch_b3[name]}')
    for p in pending:
        torn.append(f'{p}: still in the spool after the recovery drained')
in_out = sum(1 for n, s in acked.items() if any(r.startswith('out/') for r in found.get(s, [])))
in_arch = sum(1 for n, s in acked.items() if any(r.startswith('archive/') for r in found.get(s, [])))
landed_unacked = len([n for n in sent if n not in acked and sent[n][0] in found])
print(f'RESULT phase={phase} mode={mode} sent={len(sent)} acked={len(acked)} lost={len(lost)} '
      f'torn={len(torn)} dup={len(dup)} acked_in_out={in_out} acked_in_archive={in_arch} '
      f'in_spool={len(pending)} landed_unacked={landed_unacked} leftovers={len(leftovers)}')
for n in sorted(lost)[:20]:
    print('  LOST', n + ':', ', '.join(lost[n]))
for x in torn[:20]:
    print('  TORN', x)
for x in dup[:20]:
    print('  DUP', x)
for x in leftovers[:5] if phase == 'final' else []:
    print('  NOTE leftover temporary file after recovery:', x)
for x in notes[:10]:
    print('  NOTE', x)
