//! Finding running jobs' job-level cgroups under a cgroup root.
//!
//! A job's cgroup appears only after its prolog and is gone before its epilog, so the hooks can
//! never hand us a path that exists: the collector polls this instead. Slurm's layouts differ by
//! cgroup version, by release (job id or SLUID directory) and by whether several slurmd share a
//! host; all of them are recognised here so the reader never has to know. Only the job level is
//! returned, since it already includes every step.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Slices can nest (`a.slice/a-b.slice`); this bounds the walk without missing any real layout.
const MAX_SLICE_DEPTH: usize = 3;

/// How a job's cgroup directory names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKey {
    /// From `job_<id>`, or from a SLUID the caller's map knew.
    JobId(String),
    /// A Slurm 26.05 SLUID no job-started event has named yet; a later poll may map it.
    Sluid(String),
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobKey::JobId(id) | JobKey::Sluid(id) => f.write_str(id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPaths {
    /// The job's directory in the unified hierarchy.
    V2(PathBuf),
    /// The job's directory in each v1 hierarchy, keyed by the hierarchy's directory name under
    /// the root (`memory`, `cpuacct`, or a co-mounted `cpu,cpuacct`).
    V1(BTreeMap<String, PathBuf>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCgroup {
    pub job_key: JobKey,
    pub paths: CgroupPaths,
}

impl JobCgroup {
    pub fn version(&self) -> CgroupVersion {
        match self.paths {
            CgroupPaths::V1(_) => CgroupVersion::V1,
            CgroupPaths::V2(_) => CgroupVersion::V2,
        }
    }

    /// The cgroup named by a job-started event's `cgroup_path`, which wins over discovery.
    /// `path` may be a directory, or a hierarchy-relative path as in `/proc/<pid>/cgroup`
    /// (`/system.slice/slurmstepd.scope/job_7`, `/slurm/uid_0/job_7`). A v1 path is looked up
    /// in every controller, since the job's figures are spread over them. `None` while the
    /// directory does not exist (yet), so the caller simply retries on its next poll.
    pub fn from_explicit(root: &Path, job_key: JobKey, path: &Path) -> Option<JobCgroup> {
        let v2 = |dir: PathBuf| {
            is_v2_cgroup(&dir).then(|| JobCgroup {
                job_key: job_key.clone(),
                paths: CgroupPaths::V2(dir),
            })
        };
        let under_root = path.strip_prefix(root).ok();
        let relative = under_root.unwrap_or(path);
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        if let Some(found) =
            v2(path.to_path_buf()).or_else(|| v2_hierarchy(root).and_then(|h| v2(h.join(relative))))
        {
            return Some(found);
        }
        // Under the root, the first component names the v1 controller the path came from.
        let in_hierarchy: PathBuf = match under_root {
            Some(rel) => rel.components().skip(1).collect(),
            None => relative.to_path_buf(),
        };
        let dirs: BTreeMap<String, PathBuf> = v1_hierarchies(root)
            .into_iter()
            .map(|(name, dir)| (name, dir.join(&in_hierarchy)))
            .filter(|(_, dir)| dir.is_dir())
            .collect();
        (!dirs.is_empty()).then_some(JobCgroup {
            job_key,
            paths: CgroupPaths::V1(dirs),
        })
    }
}

/// Every running job's job-level cgroup under `root`. With `node`, a host running several
/// slurmd contributes only that node's directories (`<node>_slurmstepd.scope`, `slurm_<node>`);
/// unprefixed ones always belong to the only slurmd. `sluids` maps SLUID directories to job
/// ids. Only an unreadable root is an error: anything below it may vanish while we walk.
pub fn discover(
    root: &Path,
    node: Option<&str>,
    sluids: &HashMap<String, String>,
) -> io::Result<Vec<JobCgroup>> {
    if !fs::metadata(root)?.is_dir() {
        return Err(io::ErrorKind::NotADirectory.into());
    }
    let mut found = Vec::new();
    if let Some(hierarchy) = v2_hierarchy(root) {
        find_stepd_scopes(&hierarchy, 0, node, sluids, &mut found);
    }
    // Directories under a v2 root are cgroups, not v1 controller mounts.
    if !is_v2_cgroup(root) {
        found.extend(discover_v1(root, node));
    }
    Ok(found)
}

fn find_stepd_scopes(
    dir: &Path,
    depth: usize,
    node: Option<&str>,
    sluids: &HashMap<String, String>,
    found: &mut Vec<JobCgroup>,
) {
    for (name, path) in subdirs(dir) {
        if let Some(prefix) = name.strip_suffix("slurmstepd.scope") {
            if owned_by(prefix.strip_suffix('_'), prefix.is_empty(), node) {
                found.extend(v2_job_dirs(&path, sluids));
            }
        } else if depth < MAX_SLICE_DEPTH
            && !name.ends_with(".scope")
            && !name.ends_with(".service")
        {
            // Scopes and services are leaves for us; their subtrees can be large.
            find_stepd_scopes(&path, depth + 1, node, sluids, found);
        }
    }
}

fn v2_job_dirs<'a>(
    scope: &Path,
    sluids: &'a HashMap<String, String>,
) -> impl Iterator<Item = JobCgroup> + 'a {
    subdirs(scope).into_iter().filter_map(move |(name, path)| {
        let job_key = if let Some(id) = numeric_suffix(&name, "job_") {
            JobKey::JobId(id.to_owned())
        } else if is_sluid(&name) {
            match sluids.get(&name) {
                Some(id) => JobKey::JobId(id.clone()),
                None => JobKey::Sluid(name),
            }
        } else {
            return None; // `system` holds slurmstepd itself, not a job
        };
        Some(JobCgroup {
            job_key,
            paths: CgroupPaths::V2(path),
        })
    })
}

/// `<controller>/slurm[_<node>]/uid_<uid>/job_<id>`, merged across controllers per job.
fn discover_v1(root: &Path, node: Option<&str>) -> impl Iterator<Item = JobCgroup> {
    let mut jobs: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (controller, hierarchy) in v1_hierarchies(root) {
        let slurm_dirs = subdirs(&hierarchy).into_iter().filter(|(name, _)| {
            name == "slurm" || owned_by(name.strip_prefix("slurm_"), false, node)
        });
        let uid_dirs = slurm_dirs
            .flat_map(|(_, dir)| subdirs(&dir))
            .filter(|(name, _)| numeric_suffix(name, "uid_").is_some());
        for (name, dir) in uid_dirs.flat_map(|(_, dir)| subdirs(&dir)) {
            if let Some(id) = numeric_suffix(&name, "job_") {
                jobs.entry(id.to_owned())
                    .or_default()
                    .insert(controller.clone(), dir);
            }
        }
    }
    jobs.into_iter().map(|(id, dirs)| JobCgroup {
        job_key: JobKey::JobId(id),
        paths: CgroupPaths::V1(dirs),
    })
}

/// Whether a slurmd directory is ours: unprefixed (`plain`) or prefixed with our node name.
fn owned_by(dir_node: Option<&str>, plain: bool, node: Option<&str>) -> bool {
    plain || dir_node.is_some_and(|d| !d.is_empty() && node.is_none_or(|n| n == d))
}

/// Pure v2 mounts the hierarchy at the root; hybrid hosts put it under `unified`.
fn v2_hierarchy(root: &Path) -> Option<PathBuf> {
    [root.to_path_buf(), root.join("unified")]
        .into_iter()
        .find(|dir| is_v2_cgroup(dir))
}

fn is_v2_cgroup(dir: &Path) -> bool {
    dir.join("cgroup.controllers").is_file()
}

/// v1 controller mounts under a (non-v2) root. Symlinks are skipped because they alias a
/// co-mounted hierarchy (`cpuacct -> cpu,cpuacct`) that is listed under its real name.
fn v1_hierarchies(root: &Path) -> Vec<(String, PathBuf)> {
    if is_v2_cgroup(root) {
        return Vec::new();
    }
    let mut dirs = subdirs(root);
    dirs.retain(|(_, dir)| !is_v2_cgroup(dir));
    dirs
}

/// Real subdirectories with UTF-8 names; an unreadable or vanished directory has none.
fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

fn numeric_suffix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// A SLUID: `s` and 13 characters of `[0-9A-Z]`, e.g. `s5K1KKYAYG5D00`.
pub fn is_sluid(name: &str) -> bool {
    name.strip_prefix('s').is_some_and(|rest| {
        rest.len() == 13
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("fixture paths have a parent")).unwrap();
        fs::write(path, content).unwrap();
    }

    /// A v2 cgroup directory as the kernel shows it: every one has `cgroup.controllers`.
    pub(crate) fn v2_dir(root: &Path, rel: &str) -> PathBuf {
        let dir = root.join(rel);
        write(&dir, "cgroup.controllers", b"cpuset cpu io memory pids\n");
        dir
    }

    /// A v2 root holding the given cgroup directories.
    fn v2_tree(dirs: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for dir in [""].iter().chain(dirs) {
            v2_dir(t.path(), dir);
        }
        t
    }

    /// The sorted job keys `discover` finds.
    fn keys(root: &Path, node: Option<&str>, sluids: &HashMap<String, String>) -> Vec<JobKey> {
        let mut keys: Vec<JobKey> = discover(root, node, sluids)
            .unwrap()
            .into_iter()
            .map(|j| j.job_key)
            .collect();
        keys.sort();
        keys
    }

    fn ids(ids: &[&str]) -> Vec<JobKey> {
        ids.iter().map(|id| JobKey::JobId(id.to_string())).collect()
    }

    #[test]
    fn v2_job_dirs_under_the_default_slice_skip_steps_and_slurmstepd_itself() {
        let scope = "system.slice/slurmstepd.scope";
        let t = v2_tree(&[
            &format!("{scope}/job_42/step_0/user/task_0"),
            &format!("{scope}/job_43/step_extern"),
            &format!("{scope}/system"),
            &format!("{scope}/job_x1"),
            "system.slice/slurmd.service/job_99",
        ]);
        let found = discover(t.path(), None, &HashMap::new()).unwrap();
        let job42 = found.iter().find(|j| j.job_key == ids(&["42"])[0]);
        let dir42 = t.path().join(scope).join("job_42");
        assert_eq!(job42.unwrap().paths, CgroupPaths::V2(dir42));
        assert!(found.iter().all(|j| j.version() == CgroupVersion::V2));
        assert_eq!(keys(t.path(), None, &HashMap::new()), ids(&["42", "43"]));
    }

    #[test]
    fn v2_sluid_dirs_map_through_the_callers_table_or_stay_sluids() {
        let names = [
            "s5K1KKYAYG5D00",
            "s00000000000ZZ",
            "s5k1kkyayg5d00",
            "s5K1KKYAYG5D0",
        ];
        let dirs: Vec<String> = names
            .iter()
            .map(|n| format!("system.slice/slurmstepd.scope/{n}"))
            .collect();
        let t = v2_tree(&dirs.iter().map(String::as_str).collect::<Vec<_>>());
        let map = HashMap::from([(names[0].to_string(), "1001".to_string())]);
        let want = [JobKey::JobId("1001".into()), JobKey::Sluid(names[1].into())];
        assert_eq!(keys(t.path(), None, &map), want);
    }

    #[test]
    fn several_slurmd_on_one_host_only_the_given_nodes_scope_is_taken() {
        let t = v2_tree(&[
            "system.slice/n1_slurmstepd.scope/job_1",
            "system.slice/n2_slurmstepd.scope/job_2",
            "system.slice/_slurmstepd.scope/job_3",
        ]);
        let none = HashMap::new();
        assert_eq!(keys(t.path(), Some("n1"), &none), ids(&["1"]));
        assert_eq!(keys(t.path(), Some("n2"), &none), ids(&["2"]));
        assert_eq!(keys(t.path(), None, &none), ids(&["1", "2"]));
    }

    #[test]
    fn any_slice_name_and_nested_slices_are_searched() {
        let t = v2_tree(&[
            "slurm.slice/slurmstepd.scope/job_5",
            "hpc.slice/hpc-jobs.slice/slurmstepd.scope/job_6",
            "user.slice/user-0.slice/session-1.scope/slurmstepd.scope/job_7",
        ]);
        assert_eq!(keys(t.path(), None, &HashMap::new()), ids(&["5", "6"]));
    }

    /// A hybrid host: v1 controllers (one co-mounted, with the symlinks systemd adds) beside
    /// `unified`, and two slurmd sharing it.
    fn v1_fixture(root: &Path) {
        v2_dir(root, "unified");
        let jobs = [
            "slurm/uid_1000/job_8/step_0/task_0",
            "slurm_n1/uid_0/job_9",
            "slurm_n2/uid_0/job_10",
        ];
        for hierarchy in ["cpu,cpuacct", "memory", "pids", "freezer"] {
            for dir in jobs {
                fs::create_dir_all(root.join(hierarchy).join(dir)).unwrap();
            }
        }
        fs::create_dir_all(root.join("memory/slurm/uid_1000/job_11")).unwrap();
        fs::create_dir_all(root.join("memory/slurm/uid_x/job_12")).unwrap();
        for alias in ["cpu", "cpuacct"] {
            std::os::unix::fs::symlink(root.join("cpu,cpuacct"), root.join(alias)).unwrap();
        }
    }

    #[test]
    fn v1_one_entry_per_job_with_every_controllers_directory() {
        let t = tempfile::tempdir().unwrap();
        v1_fixture(t.path());
        let found = discover(t.path(), Some("n1"), &HashMap::new()).unwrap();
        let job8 = found.iter().find(|j| j.job_key == ids(&["8"])[0]).unwrap();
        let CgroupPaths::V1(dirs) = &job8.paths else {
            panic!("v1 expected")
        };
        let names: Vec<&str> = dirs.keys().map(String::as_str).collect();
        assert_eq!(names, ["cpu,cpuacct", "freezer", "memory", "pids"]);
        assert_eq!(dirs["memory"], t.path().join("memory/slurm/uid_1000/job_8"));
        assert_eq!(
            keys(t.path(), Some("n1"), &HashMap::new()),
            ids(&["11", "8", "9"])
        );
        assert_eq!(
            keys(t.path(), None, &HashMap::new()),
            ids(&["10", "11", "8", "9"])
        );
    }

    #[test]
    fn an_explicit_path_bypasses_discovery_in_either_version() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        v1_fixture(root);
        let v2 = v2_dir(root, "unified/system.slice/slurmstepd.scope/job_3");
        let key = JobKey::JobId("3".into());
        for path in [
            v2.as_path(),
            Path::new("/system.slice/slurmstepd.scope/job_3"),
        ] {
            let cg = JobCgroup::from_explicit(root, key.clone(), path).unwrap();
            assert_eq!(cg.paths, CgroupPaths::V2(v2.clone()));
        }
        let memory = root.join("memory/slurm/uid_1000/job_8");
        for path in [memory.as_path(), Path::new("/slurm/uid_1000/job_8")] {
            let cg = JobCgroup::from_explicit(root, key.clone(), path).unwrap();
            let CgroupPaths::V1(dirs) = cg.paths else {
                panic!("v1 expected")
            };
            assert_eq!((dirs.len(), &dirs["memory"]), (4, &memory));
        }
        let gone = Path::new("/system.slice/slurmstepd.scope/job_4");
        assert_eq!(JobCgroup::from_explicit(root, key, gone), None);
    }

    #[test]
    fn a_missing_root_is_an_error_an_empty_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        assert!(discover(&t.path().join("absent"), None, &HashMap::new()).is_err());
        assert!(discover(t.path(), None, &HashMap::new())
            .unwrap()
            .is_empty());
    }
}
