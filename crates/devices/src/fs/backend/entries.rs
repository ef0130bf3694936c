//! Virtual entries: files and directories a share serves from memory, at any path.
//!
//! The VMM describes them as a list of [`VirtualEntry`] (a path inside the share, permission
//! bits, bytes or "directory"), collected in a [`VirtualEntries`] handle it may keep adding
//! to until the guest's driver activates the device. At activation the list is frozen into
//! a [`Tree`], which the overlay layer consults on every request.
//!
//! A path's parent is either the share's root, a virtual directory listed before or after it,
//! or a host directory (of a passthrough share) that the overlay finds by name as the guest
//! walks to it: the "host spine". A virtual entry hides a host entry of the same name
//! completely (a virtual directory has only its virtual children).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuse_backend_rs::abi::fuse_abi::ROOT_ID;
use fuse_backend_rs::api::VFS_MAX_INO;

/// Node id of the first virtual entry; the others follow in list order. `PassthroughFs` never
/// hands out ids above `VFS_MAX_INO` (it fails the lookup first), so these cannot collide
/// with a host file.
pub const FIRST_VIRTUAL_INODE: u64 = VFS_MAX_INO + 1;

/// What a virtual entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtualKind {
    /// A regular file with these contents.
    File(Cow<'static, [u8]>),
    /// A directory whose only children are the virtual entries below it.
    Dir,
}

/// A read-only file or directory served from memory at `path` inside a share. The guest can
/// neither change nor remove it, and a host entry of the same name stays untouched behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualEntry {
    /// Path inside the share, components separated by `/` (a leading `/` is ignored).
    pub path: String,
    /// Permission bits (`0o555` for an executable, `0o444` for data); file type bits are
    /// ignored (upstream's callers pass `0o100755`).
    pub mode: u32,
    pub kind: VirtualKind,
    /// Gone from its directory after the guest's first lookup (upstream's one-shot overlay
    /// files); an inode the guest already holds keeps working.
    pub one_shot: bool,
    /// Left out of directory listings, reachable by name only: how upstream serves
    /// `/init.krun`, and so the VMM's own root files do not show in the guest's `ls /`.
    pub unlisted: bool,
}

impl VirtualEntry {
    /// A persistent virtual file.
    pub fn file(path: impl Into<String>, bytes: impl Into<Cow<'static, [u8]>>, mode: u32) -> Self {
        VirtualEntry {
            path: path.into(),
            mode,
            kind: VirtualKind::File(bytes.into()),
            one_shot: false,
            unlisted: false,
        }
    }

    /// A persistent virtual directory.
    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        VirtualEntry {
            path: path.into(),
            mode,
            kind: VirtualKind::Dir,
            one_shot: false,
            unlisted: false,
        }
    }

    /// The guest init, `/init.krun`, executable and unlisted.
    pub fn init(bytes: &'static [u8]) -> Self {
        Self::file(contract::INIT_FILE_NAME, bytes, 0o555).unlisted()
    }

    /// The same entry, left out of directory listings.
    pub fn unlisted(self) -> Self {
        VirtualEntry {
            unlisted: true,
            ..self
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, VirtualKind::Dir)
    }
}

/// Why a virtual entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VirtualEntryError {
    #[error("virtual entry path {0:?} must be relative components without '.', '..' or NUL")]
    Path(String),
    #[error("a virtual entry already exists at {0:?}")]
    Exists(String),
    #[error("the parent of {path:?} is the virtual file {parent:?}, not a directory")]
    ParentNotDir { path: String, parent: String },
}

/// The virtual entries of one share, shared between the VMM (which adds entries until the
/// guest starts) and the device (which freezes them at activation). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct VirtualEntries(Arc<Mutex<Vec<VirtualEntry>>>);

impl VirtualEntries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `entry` after checking its path: valid components, not taken, and no virtual file
    /// as an ancestor. Entries added after the device's activation take effect at the next
    /// activation only.
    pub fn add(&self, mut entry: VirtualEntry) -> Result<(), VirtualEntryError> {
        entry.path = match normalize(&entry.path) {
            Some(path) => path,
            None => return Err(VirtualEntryError::Path(entry.path)),
        };
        let mut entries = self.lock();
        if entries.iter().any(|e| e.path == entry.path) {
            return Err(VirtualEntryError::Exists(entry.path));
        }
        let mut ancestor = entry.path.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if entries.iter().any(|e| e.path == parent && !e.is_dir()) {
                let parent = parent.to_owned();
                return Err(VirtualEntryError::ParentNotDir {
                    path: entry.path,
                    parent,
                });
            }
            ancestor = parent;
        }
        // A file added above entries already listed would make it their parent.
        if !entry.is_dir() {
            let prefix = format!("{}/", entry.path);
            if let Some(child) = entries.iter().find(|e| e.path.starts_with(&prefix)) {
                return Err(VirtualEntryError::ParentNotDir {
                    path: child.path.clone(),
                    parent: entry.path,
                });
            }
        }
        entries.push(entry);
        Ok(())
    }

    /// A handle holding `entries`, each checked as [`VirtualEntries::add`] does.
    pub fn from_entries(
        entries: impl IntoIterator<Item = VirtualEntry>,
    ) -> Result<Self, VirtualEntryError> {
        let handle = Self::new();
        for entry in entries {
            handle.add(entry)?;
        }
        Ok(handle)
    }

    /// The entries as they are now.
    pub fn snapshot(&self) -> Vec<VirtualEntry> {
        self.lock().clone()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<VirtualEntry>> {
        // A panic while holding the lock cannot leave the list half-changed (one push).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `path` without leading `/`, or None when a component is empty, `.`, `..` or has a NUL.
fn normalize(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    let valid = !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    valid.then(|| path.to_owned())
}

/// A directory virtual entries can be children of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The virtual directory at this index of [`Tree::nodes`].
    Virtual(usize),
    /// The host directory at this index of the spine; 0 is the share's root.
    Host(usize),
}

/// A host directory on the path to a virtual entry, and the node id the guest knows it by
/// (0 until the guest looked it up; the root's is `ROOT_ID`).
struct HostDir {
    path: String,
    inode: AtomicU64,
}

/// One virtual entry, placed.
pub struct Node {
    pub entry: VirtualEntry,
    pub parent: Dir,
    pub name: Vec<u8>,
    /// A one-shot entry the guest looked up once: no longer in its directory.
    gone: AtomicBool,
}

/// The virtual entries of one activation, indexed for the overlay's lookups.
pub struct Tree {
    nodes: Vec<Node>,
    spine: Vec<HostDir>,
}

impl Tree {
    /// Places `entries` (valid as [`VirtualEntries::add`] checks them). An entry below a
    /// missing virtual directory, or below a host directory when `host` is false (NullFs),
    /// can never be reached: it is logged and left out.
    pub fn new(entries: Vec<VirtualEntry>, host: bool, id: &str) -> Tree {
        let mut tree = Tree {
            nodes: Vec::with_capacity(entries.len()),
            spine: vec![HostDir {
                path: String::new(),
                inode: AtomicU64::new(ROOT_ID),
            }],
        };
        let dirs: Vec<&str> = entries
            .iter()
            .filter(|e| e.is_dir())
            .map(|e| e.path.as_str())
            .collect();
        let mut placed = Vec::new();
        for entry in &entries {
            let (parent_path, name) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
            match tree.place_parent(parent_path, &dirs, host) {
                Some(parent) => placed.push((entry.clone(), parent, name.as_bytes().to_vec())),
                None => log::warn!(
                    "{id}: virtual entry {:?} is unreachable: its parent is not a directory of the share",
                    entry.path
                ),
            }
        }
        // Virtual parents are resolved by path; turn them into node indexes.
        for (entry, parent, name) in placed {
            tree.nodes.push(Node {
                entry,
                parent,
                name,
                gone: AtomicBool::new(false),
            });
        }
        for i in 0..tree.nodes.len() {
            if let Dir::Virtual(path_index) = tree.nodes[i].parent {
                let path = dirs[path_index];
                let index = tree.nodes.iter().position(|n| n.entry.path == path);
                tree.nodes[i].parent = index.map_or(Dir::Host(usize::MAX), Dir::Virtual);
            }
        }
        tree
    }

    /// Where an entry under `path` hangs: Virtual(index into `dirs`) or Host(spine index).
    fn place_parent(&mut self, path: &str, dirs: &[&str], host: bool) -> Option<Dir> {
        if path.is_empty() {
            return Some(Dir::Host(0));
        }
        if let Some(i) = dirs.iter().position(|d| *d == path) {
            return Some(Dir::Virtual(i));
        }
        let (grand, _) = path.rsplit_once('/').unwrap_or(("", path));
        match self.place_parent(grand, dirs, host)? {
            Dir::Host(_) if host => {}
            _ => return None,
        }
        if let Some(i) = self.spine.iter().position(|d| d.path == path) {
            return Some(Dir::Host(i));
        }
        self.spine.push(HostDir {
            path: path.to_owned(),
            inode: AtomicU64::new(0),
        });
        Some(Dir::Host(self.spine.len() - 1))
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The virtual entry with node id `inode`.
    pub fn node(&self, inode: u64) -> Option<&Node> {
        let index = inode.checked_sub(FIRST_VIRTUAL_INODE)?;
        self.nodes.get(usize::try_from(index).ok()?)
    }

    pub fn inode_of(index: usize) -> u64 {
        FIRST_VIRTUAL_INODE + index as u64
    }

    /// The directory node id `inode` is, if virtual entries can be in it.
    pub fn dir_of(&self, inode: u64) -> Option<Dir> {
        if let Some(node) = self.node(inode) {
            let index = (inode - FIRST_VIRTUAL_INODE) as usize;
            return node.entry.is_dir().then_some(Dir::Virtual(index));
        }
        if inode == 0 {
            return None;
        }
        self.spine
            .iter()
            .position(|d| d.inode.load(Ordering::Acquire) == inode)
            .map(Dir::Host)
    }

    /// The node id the guest knows directory `dir` by (a host directory on the spine the
    /// guest has not reached yet counts as the root: only `..` of a virtual directory asks).
    pub fn inode_of_dir(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Virtual(index) => Self::inode_of(index),
            Dir::Host(d) => self
                .spine
                .get(d)
                .map(|h| h.inode.load(Ordering::Acquire))
                .filter(|&inode| inode != 0)
                .unwrap_or(ROOT_ID),
        }
    }

    /// The index of the visible virtual entry `name` in `dir`.
    pub fn child(&self, dir: Dir, name: &[u8]) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.parent == dir && n.name == name && !n.gone.load(Ordering::Acquire))
    }

    /// The virtual entries `dir` lists, in list order (not the unlisted or gone ones).
    pub fn children(&self, dir: Dir) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| {
                n.parent == dir && !n.entry.unlisted && !n.gone.load(Ordering::Acquire)
            })
            .map(|(i, _)| i)
    }

    /// The guest looked up entry `index`: a one-shot entry leaves its directory now.
    pub fn looked_up(&self, index: usize) {
        if let Some(node) = self.nodes.get(index) {
            if node.entry.one_shot {
                node.gone.store(true, Ordering::Release);
            }
        }
    }

    pub fn node_at(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// The spine directory `name` of host directory `dir`, if it is one.
    pub fn spine_child(&self, dir: usize, name: &[u8]) -> Option<usize> {
        if self.spine.len() == 1 {
            // Only the root: every virtual entry hangs from it or from virtual directories.
            return None;
        }
        let parent = &self.spine.get(dir)?.path;
        let name = std::str::from_utf8(name).ok()?;
        let want = if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}/{name}")
        };
        self.spine.iter().position(|d| d.path == want)
    }

    /// The guest reached spine directory `index` as node id `inode`.
    pub fn record_spine(&self, index: usize, inode: u64) {
        if let Some(d) = self.spine.get(index) {
            d.inode.store(inode, Ordering::Release);
        }
    }
}
