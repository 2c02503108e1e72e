"""Floods against an ingestd node, with paramiko (tests/abuse.rs drives them).

argv: host port user keyfile flood [args...]
Prints `HOLDING <figures>` once the flood is in place and keeps every
connection open until stdin is closed; then exits.
  channels N          one connection opens N session channels, each running
                      `scp -t .` with an unfinished 1 GiB file announced
  handles C K         C connections, each with as many SFTP channels as allowed,
                      each opening K files and writing 1 KiB to each, never closing
  mkdir N L           one SFTP session sends N MKDIRs of L-byte paths (components
                      of 250 bytes)
"""
import logging
import sys

import paramiko

logging.getLogger("paramiko").setLevel(logging.CRITICAL)

host, port, user, keyfile, flood = sys.argv[1:6]
args = [int(a) for a in sys.argv[6:]]
key = paramiko.Ed25519Key.from_private_key_file(keyfile)


def connect():
    t = paramiko.Transport((host, int(port)))
    t.connect(username=user, pkey=key)
    return t


held = []
if flood == "channels":
    t = connect()
    held.append(t)
    opened = refused = 0
    for i in range(args[0]):
        try:
            c = t.open_session(timeout=10)
        except paramiko.ChannelException as e:
            refused += 1
            last = e.text
            continue
        c.exec_command("scp -t .")
        c.recv(1)
        c.sendall(b"C0644 1073741824 unfinished-%d\n" % i)
        c.recv(1)
        c.sendall(b"x" * 1024)
        held.append(c)
        opened += 1
    print("HOLDING opened=%d refused=%d" % (opened, refused), flush=True)
elif flood == "handles":
    conns, per = args
    opened = refused = 0
    reasons = set()
    for _ in range(conns):
        t = connect()
        held.append(t)
        while True:
            try:
                s = paramiko.SFTPClient.from_transport(t)
            except Exception:
                break
            held.append(s)
            stop = False
            for i in range(per):
                try:
                    f = s.open("held-%d-%d" % (id(s), i), "wb")
                    f.write(b"y" * 1024)
                    f.flush()
                    held.append(f)
                    opened += 1
                except IOError as e:
                    refused += 1
                    reasons.add(str(e))
                    stop = True
                    break
            if stop:
                break
    print("HOLDING opened=%d refused=%d reasons=%r" % (opened, refused, sorted(reasons)), flush=True)
elif flood == "mkdir":
    n, length = args
    t = connect()
    held.append(t)
    s = paramiko.SFTPClient.from_transport(t)
    made = refused = 0
    reason = ""
    for i in range(n):
        name = ("m%d-" % i).ljust(length, "x")
        name = "/".join(name[j:j + 250] for j in range(0, len(name), 250))
        try:
            s.mkdir(name)
            made += 1
        except IOError as e:
            refused += 1
            reason = str(e)
    print("HOLDING made=%d refused=%d reason=%r" % (made, refused, reason[-120:]), flush=True)
else:
    sys.exit("unknown flood " + flood)

sys.stdin.read()
for h in reversed(held):
    try:
        h.close()
    except Exception:
        pass
