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

/// What one remembered entry is counted as, in bytes: its path (stored once),
/// the file id, and the map's own overhead.
fn cost(path: &str, node: &Node) -> usize {
    const OVERHEAD: usize = 96;
    path.len()
        + OVERHEAD
        + match node {
            Node::Dir => 0,
            Node::File(f) => f.id.len(),
        }
}

#[derive(Default)]
struct Tree {
    /// path → (node, when it was added)
    nodes: BTreeMap<String, (Node, Instant)>,
    /// Sum of [`cost`] over `nodes`.
    bytes: usize,
    /// When expired entries were last dropped.
    swept: Option<Instant>,
}

impl Tree {
    fn insert(&mut self, path: String, node: Node) -> usize {
        let c = cost(&path, &node);
        let old = self.nodes.insert(path.clone(), (node, Instant::now()));
        self.bytes += c;
        let freed = old.map_or(0, |(n, _)| cost(&path, &n));
        self.bytes -= freed;
        freed
    }

    fn remove(&mut self, path: &str) -> Option<(Node, usize)> {
        let (n, _) = self.nodes.remove(path)?;
        let c = cost(path, &n);
        self.bytes -= c;
        Some((n, c))
    }

    /// Drop the oldest entries until at most `keep` bytes are left (a tenth more
    /// at a time, so a view that stays at its cap is not rescanned per landing).
    /// Returns the bytes freed.
    fn shrink_to(&mut self, keep: usize) -> usize {
        if self.bytes <= keep {
            return 0;
        }
        let target = keep - keep / 10;
        let mut by_age: Vec<(Instant, String)> = self
            .nodes
            .iter()
            .map(|(k, (_, at))| (*at, k.clone()))
            .collect();
        by_age.sort();
        let before = self.bytes;
        for (_, k) in by_age {
            if self.bytes <= target {
                break;
            }
            self.remove(&k);
        }
        before - self.bytes
    }
}

/// Every user's view, bounded in time (`sftp.visible_for`) and in memory:
/// `sftp.max_view_per_user` bytes per user and `sftp.max_view` for the node (see
/// [`cost`]). Past a bound, a landing forgets the user's oldest entries (the view
/// is a convenience; the upload itself is never affected) and a MKDIR is refused.
pub struct Vfs {
    ttl: Duration,
    max_user: usize,
    max_node: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: HashMap<String, Tree>,
    /// Sum of every tree's bytes.
    bytes: usize,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Vfs {
    /// A view remembering at most `max_user` bytes per user and `max_node` in all.
    pub fn with_limits(ttl: Duration, max_user: usize, max_node: usize) -> Vfs {
        Vfs {
            ttl,
            max_user,
            max_node: max_node.max(max_user),
            state: Mutex::default(),
        }
    }

    /// Bytes remembered now, over every user (see [`cost`]).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.state.lock().unwrap().bytes
    }

    fn with<R>(&self, user: &str, f: impl FnOnce(&mut Tree, &mut Room) -> R) -> R {
        let mut st = self.state.lock().unwrap();
        let State { users, bytes } = &mut *st;
        let tree = users.entry(user.to_string()).or_default();
        // Expired entries are dropped at most once a second per user, so a view
        // of many entries is not rescanned by every request.
        let ttl = self.ttl;
        if tree
            .swept
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            let before = tree.bytes;
            let expired: Vec<String> = tree
                .nodes
                .iter()
                .filter(|(_, (_, at))| at.elapsed() >= ttl)
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                tree.remove(&k);
            }
            *bytes -= before - tree.bytes;
            tree.swept = Some(Instant::now());
        }
        let before = tree.bytes;
        let mut room = Room {
            user_max: self.max_user,
            node_free: self.max_node.saturating_sub(*bytes - before),
        };
        let r = f(tree, &mut room);
        *bytes = *bytes - before + tree.bytes;
        if tree.nodes.is_empty() {
            users.remove(user);
        }
        r
    }

    /// Remember a landed file (and its parent directories), forgetting the
    /// user's oldest entries if the view is full.
    pub fn landed(&self, r: &Record) {
        let t = now_secs();
        let file = LandedFile {
            id: r.id.clone(),
            size: r.size,
            mode: r.mode,
            mtime: r.mtime.unwrap_or(t),
            atime: r.atime.or(r.mtime).unwrap_or(t),
        };
        self.with(&r.user, |tree, room| {
            let mut p = r.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                tree.insert(parent.to_string(), Node::Dir);
                p = parent;
            }
            tree.insert(r.path.clone(), Node::File(file));
            tree.shrink_to(room.limit());
        });
    }

    /// `mkdir`: false if something already has that name, or the user's view
    /// (or the node's) is full.
    pub fn mkdir(&self, user: &str, path: &str) -> bool {
        let ttl = self.ttl;
        self.with(user, |tree, room| {
            if tree
                .nodes
                .get(path)
                .is_some_and(|(_, at)| at.elapsed() >= ttl)
            {
                tree.remove(path);
            }
            if path.is_empty()
                || tree.nodes.contains_key(path)
                || tree.bytes + cost(path, &Node::Dir) > room.limit()
            {
                return false;
            }
            tree.insert(path.to_string(), Node::Dir);
            true
        })
    }

    /// `rmdir` of an empty directory.
    pub fn rmdir(&self, user: &str, path: &str) -> bool {
        self.with(user, |tree, _| {
            let prefix = format!("{path}/");
            let empty = !tree
                .nodes
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix));
            empty
                && matches!(tree.nodes.get(path), Some((Node::Dir, _)))
                && tree.remove(path).is_some()
        })
    }

    /// Rename in the view only (the landed record keeps its name).
    pub fn rename(&self, user: &str, from: &str, to: &str) -> bool {
        self.with(user, |tree, room| match tree.remove(from) {
            Some((n, _)) => {
                tree.insert(to.to_string(), n);
                tree.shrink_to(room.limit());
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
        let ttl = self.ttl;
        self.with(user, |tree, _| {
            tree.nodes
                .get(path)
                .filter(|(_, at)| at.elapsed() < ttl)
                .map(|(n, _)| n.clone())
        })
    }

    /// Immediate children of directory `dir`.
    pub fn list(&self, user: &str, dir: &str) -> Vec<(String, Node)> {
        let ttl = self.ttl;
        self.with(user, |tree, _| {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            tree.nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, (_, at))| {
                    !k[prefix.len()..].contains('/') && k.len() > prefix.len() && at.elapsed() < ttl
                })
                .map(|(k, (n, _))| (k[prefix.len()..].to_string(), n.clone()))
                .collect()
        })
    }
}

/// How much one user's tree may hold during one call.
struct Room {
    user_max: usize,
    /// The node's bound less every other user's bytes.
    node_free: usize,
}

impl Room {
    fn limit(&self) -> usize {
        self.user_max.min(self.node_free)
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
        let v = Vfs::with_limits(Duration::from_secs(60), 4 << 20, 64 << 20);
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
    fn the_view_is_bounded_per_user_and_per_node() {
        let v = Vfs::with_limits(Duration::from_secs(60), 10_000, 25_000);
        let long = "d".repeat(1000);
        // MKDIR: refused once the user's share is used up; nothing grows beyond.
        let made = (0..100)
            .filter(|i| v.mkdir("a", &format!("{long}{i}")))
            .count();
        assert!((5..10).contains(&made), "made {made}");
        assert!(v.bytes() <= 10_000);
        // Another user has their own share, up to the node's bound.
        let made_b = (0..100)
            .filter(|i| v.mkdir("b", &format!("{long}{i}")))
            .count();
        assert_eq!(made, made_b);
        let made_c = (0..100)
            .filter(|i| v.mkdir("c", &format!("{long}{i}")))
            .count();
        assert!(made_c < made, "the node's bound applies: {made_c}");
        assert!(v.bytes() <= 25_000, "{}", v.bytes());
        // A landing always succeeds in the view: the user's oldest entries go.
        for i in 0..50 {
            v.landed(&rec("a", &format!("{long}/f{i}"), 1));
        }
        assert!(v.bytes() <= 25_000);
        assert!(matches!(
            v.lookup("a", &format!("{long}/f49")),
            Some(Node::File(_))
        ));
        assert!(
            v.lookup("a", &format!("{long}0")).is_none(),
            "oldest forgotten"
        );
        // rmdir gives the room back.
        assert!(v.rmdir("b", &format!("{long}0")));
        assert!(v.mkdir("b", "small"));
    }

    #[test]
    fn expires() {
        let v = Vfs::with_limits(Duration::from_millis(1), 4 << 20, 64 << 20);
        v.landed(&rec("a", "f", 1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(v.lookup("a", "f").is_none());
    }
}
