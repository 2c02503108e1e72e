"""One hostile SFTP (or SSH-request) case against an ingestd node, with paramiko.

argv: host port user keyfile case token
Prints one line: `REFUSED <text>` when the server answered the request with an
error (the text is what the client was told), `ACCEPTED <detail>` when it did
not. The Rust side (tests/hostile.rs) asserts what each case must get.
"""
import socket
import sys

import paramiko
from paramiko.py3compat import long
from paramiko.sftp import CMD_EXTENDED, CMD_READ, CMD_WRITE

host, port, user, keyfile, case, token = sys.argv[1:7]
t = paramiko.Transport((host, int(port)))
t.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(keyfile))
name = "evil-" + token
# Files the client legitimately creates along the way (they may land: an
# opened-then-closed file is an upload); only `evil-` names must never land.
ok = "ok-" + token


def sftp():
    return paramiko.SFTPClient.from_transport(t)


def upload(s, path, data=b"hello"):
    with s.open(path, "wb") as f:
        f.write(data)


def run():
    if case == "sftp_dotdot_write":
        upload(sftp(), "../../" + name)
    elif case == "sftp_absolute_write_outside":
        upload(sftp(), "/../../tmp/" + name)
    elif case == "sftp_read_back":
        s = sftp()
        upload(s, ok)
        s.open(ok, "rb").read()
    elif case == "sftp_read_etc_passwd":
        sftp().open("/etc/passwd", "rb").read()
    elif case == "sftp_remove":
        s = sftp()
        upload(s, ok)
        s.remove(ok)
    elif case == "sftp_symlink":
        sftp().symlink("/etc/passwd", name)
    elif case == "sftp_readlink":
        sftp().readlink(name)
    elif case == "sftp_chmod_missing":
        sftp().chmod(name, 0o600)
    elif case == "sftp_rename_missing":
        sftp().rename(name, name + "-2")
    elif case == "sftp_rmdir_missing":
        sftp().rmdir(name)
    elif case == "sftp_mkdir_root":
        sftp().mkdir("/")
    elif case == "sftp_listdir_etc":
        sftp().listdir("/etc")
    elif case == "sftp_stat_etc_passwd":
        sftp().stat("/etc/passwd")
    elif case == "sftp_append":
        s = sftp()
        with s.open(name, "ab") as f:
            f.write(b"x")
    elif case == "sftp_sparse_hole":
        with sftp().open(name, "wb") as f:
            f.seek((1 << 30) - 5)
            f.write(b"hello")
    elif case == "sftp_too_many_handles":
        s = sftp()
        hs = [s.open("%s-%d" % (ok, i), "wb") for i in range(40)]
    elif case == "sftp_non_utf8_name":
        upload(sftp(), b"evil-\xff\xfe-" + token.encode())
    elif case == "sftp_long_component":
        upload(sftp(), "e" * 300 + token)
    elif case == "sftp_deep_path":
        upload(sftp(), "/".join(["d"] * 100) + "/" + name)
    elif case == "sftp_path_too_long":
        upload(sftp(), "/".join(["p" * 200] * 30) + "/" + name)
    elif case == "sftp_too_large":
        upload(sftp(), name, b"x" * (2 << 20))
    elif case == "sftp_hardlink_ext":
        s = sftp()
        s._request(CMD_EXTENDED, "hardlink@openssh.com", "/etc/passwd", name)
    elif case == "sftp_unknown_ext":
        sftp()._request(CMD_EXTENDED, "evil@example.com", name)
    elif case == "sftp_write_after_close":
        s = sftp()
        f = s.open(ok, "wb")
        h = f.handle
        f.close()
        s._request(CMD_WRITE, h, long(0), b"late")
    elif case == "sftp_read_on_write_handle":
        s = sftp()
        f = s.open(ok, "wb")
        s._request(CMD_READ, f.handle, long(0), 10)
    elif case == "sftp_malformed_request":
        # a READ whose offset is 4 bytes instead of 8: answered, not ignored
        s = sftp()
        f = s.open(ok, "wb")
        s._request(CMD_READ, f.handle, 0, 10)
    elif case == "sftp_opendir_file":
        s = sftp()
        upload(s, ok)
        s.listdir(ok)
    elif case == "sftp_rename_onto_dotdot":
        s = sftp()
        with s.open(ok + ".filepart", "wb") as f:
            f.write(b"hello")
        s.rename(ok + ".filepart", "../../" + name)
    # --- SSH requests -------------------------------------------------------
    elif case == "ssh_direct_tcpip":
        t.open_channel("direct-tcpip", ("127.0.0.1", int(port)), ("127.0.0.1", 1))
    elif case == "ssh_tcpip_forward":
        t.request_port_forward("127.0.0.1", 0)
    elif case == "ssh_x11_channel":
        t.open_channel("x11", src_addr=("127.0.0.1", 6000))
    elif case == "ssh_x11_request":
        c = t.open_session()
        c.request_x11(auth_protocol="MIT-MAGIC-COOKIE-1", auth_cookie="00" * 16)
    elif case == "ssh_shell":
        c = t.open_session()
        c.get_pty()
        c.invoke_shell()
        print("REFUSED " + c.makefile_stderr().read().decode(errors="replace").strip()
              + " " + c.makefile().read().decode(errors="replace").strip()
              + " exit=" + str(c.recv_exit_status()))
        sys.exit(0)
    elif case == "ssh_unknown_channel_type":
        t.open_channel("evil@example.com")
    elif case == "ssh_global_request":
        r = t.global_request("evil@example.com", wait=True)
        if r is None:
            raise paramiko.SSHException("global request refused")
    else:
        print("UNKNOWN-CASE " + case)
        sys.exit(2)


try:
    run()
    print("ACCEPTED")
except paramiko.ChannelException as e:
    print("REFUSED channel %d %s" % (e.code, e.text))
except (IOError, OSError, paramiko.SSHException, EOFError) as e:
    print("REFUSED %s: %s" % (type(e).__name__, e))
t.close()
