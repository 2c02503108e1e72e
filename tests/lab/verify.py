#!/usr/bin/env python3
"""verify.py LABDIR: the lab's end-to-end checks, read through a Gluster mount.

Reads the senders' results (LABDIR/results-*.txt), the archive and forward
directories on the Gluster volume (LABDIR/mnt/n1/{archive,outgoing}), the nodes'
spools (LABDIR/nK/spool) and the events lab.sh recorded (LABDIR/events.txt:
`KEY VALUE` lines). Prints one `LAB:` summary line per check and exits 1 if any
failed. BLAKE3 is computed with b3sum (Debian package b3sum).
"""
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

lab = sys.argv[1]
mnt = os.path.join(lab, "mnt", "n1")
archive_root, forward_root = os.path.join(mnt, "archive"), os.path.join(mnt, "outgoing")
failures = []


def line(ok, text):
    print(f"LAB: {'PASS' if ok else 'FAIL'} {text}")
    if not ok:
        failures.append(text)


def b3sums(paths):
    out = {}
    for i in range(0, len(paths), 200):
        chunk = paths[i:i + 200]
        r = subprocess.run(["b3sum", "--", *chunk], capture_output=True, text=True, check=True)
        for ln in r.stdout.splitlines():
            h, p = ln.split("  ", 1)
            out[p] = h
    return out


events = {}
with open(os.path.join(lab, "events.txt")) as f:
    for ln in f:
        k, _, v = ln.strip().partition(" ")
        events[k] = v

uploads = {}  # name -> dict
for fn in sorted(os.listdir(lab)):
    if fn.startswith("results-") and fn.endswith(".txt"):
        with open(os.path.join(lab, fn)) as f:
            for ln in f:
                ph, seq, name, b3, size, status, attempts, t0, t1, proto = ln.split()
                uploads[name] = dict(phase=ph, seq=int(seq), b3=b3, size=int(size), ok=status == "ok",
                                     attempts=int(attempts), t0=float(t0), t1=float(t1), proto=proto)
by_phase = defaultdict(list)
for n, u in uploads.items():
    by_phase[u["phase"]].append(n)

# --- archive: every record.json, the file beside it, verified --------------------
landed = defaultdict(list)  # name -> [record]
records = []
for d, _, files in os.walk(archive_root):
    for fn in files:
        if fn.endswith(".record.json"):
            with open(os.path.join(d, fn)) as f:
                rec = json.load(f)
            rec["_data"] = os.path.join(d, fn[: -len(".record.json")])
            records.append(rec)
sums = b3sums([r["_data"] for r in records if os.path.exists(r["_data"])])
bad_archive = []
for r in records:
    h = sums.get(r["_data"])
    if h != r["blake3"]:
        bad_archive.append(f'{r["_data"]}: b3sum {h} record {r["blake3"]}')
    landed[r["path"]].append(r)

# --- forward: {id}__{name}, exactly once per landed id --------------------------
fwd_files = sorted(os.listdir(forward_root)) if os.path.isdir(forward_root) else []
fwd_by_id = Counter()
fwd_bad = []
fwd_paths = [os.path.join(forward_root, x) for x in fwd_files]
fsums = b3sums(fwd_paths) if fwd_paths else {}
rec_by_id = {r["id"]: r for r in records}
for fn, p in zip(fwd_files, fwd_paths):
    rid, _, name = fn.partition("__")
    fwd_by_id[rid] += 1
    r = rec_by_id.get(rid)
    if r is None:
        fwd_bad.append(f"{fn}: no archived record with id {rid}")
    elif fsums.get(p) != r["blake3"]:
        fwd_bad.append(f"{fn}: b3sum {fsums.get(p)} != {r['blake3']}")

# --- per-upload checks -------------------------------------------------------------
acked = [n for n, u in uploads.items() if u["ok"]]
missing, wrong, dup_unexplained, dup_retried, fwd_not_once = [], [], [], [], []
for n in acked:
    u, recs = uploads[n], landed.get(n, [])
    if not recs:
        missing.append(n)
        continue
    if any(r["blake3"] != u["b3"] for r in recs):
        wrong.append(n)
    if len(recs) > 1:
        (dup_retried if u["attempts"] > 1 else dup_unexplained).append(n)
    for r in recs:
        if fwd_by_id[r["id"]] != 1:
            fwd_not_once.append(f'{n} id {r["id"]}: forwarded {fwd_by_id[r["id"]]} times')
unknown = [r["path"] for r in records if r["path"] not in uploads]

# --- spools drained ---------------------------------------------------------------
left = []
for node in sorted(x for x in os.listdir(lab) if x.startswith("n") and x[1:].isdigit()):
    for st in ("ready", "archived", "processed", "quarantine"):
        d = os.path.join(lab, node, "spool", st)
        if os.path.isdir(d) and os.listdir(d):
            left.append(f"{node}/{st}: {len(os.listdir(d))}")

# --- A: distribution ----------------------------------------------------------------
a = by_phase.get("a", [])
dist = Counter(landed[n][0]["node"] for n in a if landed.get(n))
share = len(a) / 3 if a else 0
lo, hi = share * 0.8, share * 1.2
line(len(a) == 150 and all(uploads[n]["ok"] for n in a) and len(dist) == 3
     and all(lo <= c <= hi for c in dist.values()),
     f"distribution: {len(a)} uploads through the VIP, "
     + " ".join(f"{k}={v}" for k, v in sorted(dist.items()))
     + f" (even share {share:.0f}, allowed {lo:.0f}-{hi:.0f}), "
     f"failed={sum(not uploads[n]['ok'] for n in a)}")

# --- B: maintenance -----------------------------------------------------------------
b = by_phase.get("b", [])
mnode, tdown = events.get("maint_node"), float(events.get("maint_down_at", "0") or 0)
after = [n for n in b if tdown and uploads[n]["t0"] > tdown]
after_on = [n for n in after if any(r["node"] == mnode for r in landed.get(n, []))]
b_fail = [n for n in b if not uploads[n]["ok"] or uploads[n]["attempts"] > 1]
line(bool(b) and tdown > 0 and len(after) >= 10 and not after_on and not b_fail,
     f"maintenance: {mnode} marked down by both directors {events.get('maint_down_after', '?')}s "
     f"after its maintenance file appeared; {len(b)} uploads in the stream, {len(after)} started "
     f"after that, {len(after_on)} of them on {mnode}; failed or retried: {len(b_fail)}; "
     f"drain script: {events.get('maint_drain', '?')}")

# --- C: director failover -----------------------------------------------------------
c = by_phase.get("c", [])
c_fail = [n for n in c if not uploads[n]["ok"]]
c_retried = [n for n in c if uploads[n]["attempts"] > 1]
tk = float(events.get("failover_at", "0") or 0)
c_inflight = [n for n in c if uploads[n]["t0"] < tk < uploads[n]["t1"]]
line(bool(c) and events.get("failover_to") not in (None, "", "none") and not c_fail,
     f"director failover: master {events.get('failover_from')} killed, VIP on "
     f"{events.get('failover_to')} after {events.get('failover_secs', '?')}s; {len(c)} uploads "
     f"({len(c_inflight)} in flight at the kill), "
     f"{len(c) - len(c_fail)} succeeded ({len(c_retried)} on the sender's one retry), failed={len(c_fail)}")

# --- D: gluster server killed -------------------------------------------------------
d = by_phase.get("d", [])
d_fail = [n for n in d if not uploads[n]["ok"] or uploads[n]["attempts"] > 1]
d_arch = [n for n in d if landed.get(n)]
line(bool(d) and not d_fail and len(d_arch) == len(d),
     f"gluster server down: {events.get('gluster_killed')} killed during the stream; {len(d)} uploads, "
     f"failed or retried={len(d_fail)}; {len(d_arch)}/{len(d)} archived with it down "
     f"(archived after the kill: {events.get('archived_after_kill', '?')})")

# --- every acknowledged file: archived, verified, forwarded once --------------------
line(not missing and not wrong and not bad_archive and not dup_unexplained and not fwd_not_once
     and not fwd_bad and not unknown and not left,
     f"end to end: {len(acked)}/{len(uploads)} uploads acknowledged; archived on Gluster and "
     f"BLAKE3-verified {len(acked) - len(missing) - len(wrong)}/{len(acked)} "
     f"({len(records)} archive copies, {len(bad_archive)} bad); forwarded exactly once "
     f"{len(records) - len({x.split(' id ')[0] for x in fwd_not_once})}/{len(records)} landings "
     f"({len(fwd_files)} forward files, {len(fwd_bad)} bad); spools left: {left or 'none'}; "
     f"uploads landed twice because the ack of a first attempt was lost with the killed "
     f"director and the sender retried: {len(dup_retried)}")
for title, items in (("missing from archive", missing), ("blake3 differs", wrong), ("bad archive copy", bad_archive),
                     ("landed twice without a retry", dup_unexplained), ("not forwarded exactly once", fwd_not_once),
                     ("bad forward file", fwd_bad), ("archived but never sent", unknown),
                     ("landed twice (retried after a lost ack)", dup_retried)):
    for x in items[:10]:
        print(f"LAB:   {title}: {x}")
sys.exit(1 if failures else 0)
