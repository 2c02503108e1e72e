//! The sender's view of their virtual root. Nothing a sender uploads is ever
//! visible as a real directory tree (files live in the spool under ids), so each
//! user's recent uploads and the directories they created are remembered here,
//! in memory, for `sftp.visible_for`: `stat`/`ls` of a file just uploaded answer
//! with its size, and `scp host:dir` knows `dir` is a directory.

use crate::core::record::Record;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq)]
pub struct LandedFile {
    pub id: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub atime: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Dir,
    File(LandedFile),
}

#[derive(Default)]
struct Tree {
    /// path → (node, when it was added)
    nodes: BTreeMap<String, (Node, Instant)>,
}

pub struct Vfs {
    ttl: Duration,
    users: Mutex<HashMap<String, Tree>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Vfs {
    pub fn new(ttl: Duration) -> Vfs {
        Vfs {
            ttl,
            users: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, user: &str, f: impl FnOnce(&mut Tree) -> R) -> R {
        let mut users = self.users.lock().unwrap();
        let tree = users.entry(user.to_string()).or_default();
        let ttl = self.ttl;
        tree.nodes.retain(|_, (_, at)| at.elapsed() < ttl);
        f(tree)
    }

    /// Remember a landed file (and its parent directories).
    pub fn landed(&self, r: &Record) {
        let t = now_secs();
        let file = LandedFile {
            id: r.id.clone(),
            size: r.size,
            mode: r.mode,
            mtime: r.mtime.unwrap_or(t),
            atime: r.atime.or(r.mtime).unwrap_or(t),
        };
        self.with(&r.user, |tree| {
            let mut p = r.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                tree.nodes
                    .insert(parent.to_string(), (Node::Dir, Instant::now()));
                p = parent;
            }
            tree.nodes
                .insert(r.path.clone(), (Node::File(file), Instant::now()));
        });
    }

    /// `mkdir`: false if something already has that name.
    pub fn mkdir(&self, user: &str, path: &str) -> bool {
        self.with(user, |tree| {
            if path.is_empty() || tree.nodes.contains_key(path) {
                return false;
            }
            tree.nodes
                .insert(path.to_string(), (Node::Dir, Instant::now()));
            true
        })
    }

    /// `rmdir` of an empty directory.
    pub fn rmdir(&self, user: &str, path: &str) -> bool {
        self.with(user, |tree| {
            let prefix = format!("{path}/");
            let empty = !tree
                .nodes
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix));
            empty
                && matches!(tree.nodes.get(path), Some((Node::Dir, _)))
                && tree.nodes.remove(path).is_some()
        })
    }

    /// Rename in the view only (the landed record keeps its name).
    pub fn rename(&self, user: &str, from: &str, to: &str) -> bool {
        self.with(user, |tree| match tree.nodes.remove(from) {
            Some(n) => {
                tree.nodes.insert(to.to_string(), n);
                true
            }
            None => false,
        })
    }

    /// What `path` is: the root and every remembered directory are directories.
    pub fn lookup(&self, user: &str, path: &str) -> Option<Node> {
        if path.is_empty() {
            return Some(Node::Dir);
        }
        self.with(user, |tree| tree.nodes.get(path).map(|(n, _)| n.clone()))
    }

    /// Immediate children of directory `dir`.
    pub fn list(&self, user: &str, dir: &str) -> Vec<(String, Node)> {
        self.with(user, |tree| {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            tree.nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| !k[prefix.len()..].contains('/') && k.len() > prefix.len())
                .map(|(k, (n, _))| (k[prefix.len()..].to_string(), n.clone()))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, path: &str, size: u64) -> Record {
        Record {
            id: format!("n-{path}"),
            node: "n".into(),
            user: user.into(),
            path: path.into(),
            size,
            mode: 0o644,
            mtime: None,
            atime: None,
            blake3: String::new(),
            remote_addr: String::new(),
            received_at: String::new(),
            protocol: "sftp".into(),
        }
    }

    #[test]
    fn view_per_user() {
        let v = Vfs::new(Duration::from_secs(60));
        v.landed(&rec("a", "x/y/f", 5));
        assert_eq!(v.lookup("a", "x"), Some(Node::Dir));
        assert!(matches!(v.lookup("a", "x/y/f"), Some(Node::File(f)) if f.size == 5));
        assert_eq!(v.lookup("b", "x"), None);
        assert_eq!(v.list("a", "x").len(), 1);
        assert_eq!(v.list("a", "").len(), 1);
        assert!(v.mkdir("a", "d"));
        assert!(!v.mkdir("a", "d"));
        assert!(v.rename("a", "x/y/f", "x/y/g"));
        assert!(v.lookup("a", "x/y/f").is_none());
        assert!(!v.rmdir("a", "x"));
        assert!(v.rmdir("a", "d"));
    }

    #[test]
    fn expires() {
        let v = Vfs::new(Duration::from_millis(1));
        v.landed(&rec("a", "f", 1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(v.lookup("a", "f").is_none());
    }
}
