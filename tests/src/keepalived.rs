//! keepalived as AWS users run it, for the failover benchmark: one `keepalived` per node
//! namespace of a [`Cluster`] (whose agents are not running), unicast VRRP between the node
//! addresses, priorities 150/100/50 by node order, and a `notify_master` script that moves the
//! cluster's Elastic IP with `aws ec2 associate-address --allow-reassociation` (the AWS CLI
//! from PyPI, in the moto virtualenv), pointed at the cluster's fault proxy, so that its claims
//! land in the same claim log as ha-agent's.
//!
//! The instance has one virtual address, `10.77.S.100/32` on the namespace's eth0 (keepalived
//! requires one with VRRPv3); it lives only on the harness's bridge.
//!
//! Every state transition is appended by a `notify` script to `<dir>/keepalived-N.events` as
//! `<epoch seconds> <STATE>`: the VRRP-side record of which node believed it was master.
//!
//! Processes: `keepalived --dont-fork` is the parent (the pid the harness spawned); it forks
//! the VRRP child. A crash is SIGKILL of both (see [`Keepalived::crash`]); killing only the
//! parent lets the child send a priority-0 advert, a graceful hand-off.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::aws::{moto_python, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use crate::cluster::Cluster;
use crate::command::wait_with_timeout;

/// The VRRP settings of one keepalived run.
#[derive(Clone, Copy, Debug)]
pub struct VrrpSettings {
    /// `advert_int` in seconds (sub-second values need VRRPv3).
    pub advert_int: f64,
}

impl VrrpSettings {
    /// `vrrp_version 3` for sub-second intervals (VRRPv2 only has whole seconds).
    pub fn version(&self) -> u8 {
        if self.advert_int.fract() == 0.0 {
            2
        } else {
            3
        }
    }

    /// RFC 5798's Master_Down_Interval for a backup of `priority`:
    /// 3 × advert_int + (256 − priority) × advert_int / 256.
    pub fn master_down_interval(&self, priority: u32) -> f64 {
        3.0 * self.advert_int + (256.0 - f64::from(priority)) * self.advert_int / 256.0
    }

    pub fn label(&self) -> String {
        format!("keepalived advert_int {}", self.advert_int)
    }
}

/// The path of the AWS CLI in the moto virtualenv.
pub fn aws_cli() -> Result<PathBuf> {
    let python = moto_python()?;
    let cli = python.with_file_name("aws");
    ensure!(
        cli.is_file(),
        "the AWS CLI is not installed at {}: run `bash scripts/setup` (it pip-installs awscli \
         into the moto virtualenv)",
        cli.display()
    );
    Ok(cli)
}

/// The keepalived binary.
pub fn keepalived_binary() -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/sbin"] {
        let path = Path::new(dir).join("keepalived");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("keepalived is not installed: run `bash scripts/setup` (Debian package keepalived)")
}

/// Priorities by position of the node among the cluster's ids: 150, 100, 50.
pub fn priority_of(index: usize) -> u32 {
    [150, 100, 50].get(index).copied().unwrap_or(25)
}

struct Instance {
    parent: Child,
    config: PathBuf,
    events: PathBuf,
    log: PathBuf,
    stopped: bool,
}

/// keepalived in every node namespace of a cluster. Dropping it SIGKILLs what it started.
pub struct Keepalived {
    settings: VrrpSettings,
    dir: PathBuf,
    binary: PathBuf,
    instances: BTreeMap<u64, Instance>,
    priorities: BTreeMap<u64, u32>,
}

impl Keepalived {
    /// Writes every node's config and scripts under `<cluster dir>/keepalived-<advert>`; starts
    /// nothing.
    pub fn prepare(cluster: &Cluster, settings: VrrpSettings) -> Result<Keepalived> {
        let binary = keepalived_binary()?;
        let cli = aws_cli()?;
        let dir = cluster
            .dir()
            .join(format!("keepalived-{}", settings.advert_int));
        fs::create_dir_all(&dir)?;
        let world = cluster.aws()?;
        let ids = cluster.ids();
        let mut priorities = BTreeMap::new();
        for (index, &id) in ids.iter().enumerate() {
            let priority = priority_of(index);
            priorities.insert(id, priority);
            let node = world.node(id)?;
            let events = dir.join(format!("keepalived-{id}.events"));
            let notify = dir.join(format!("notify-{id}.sh"));
            let master = dir.join(format!("notify-master-{id}.sh"));
            fs::write(
                &notify,
                format!(
                    "#!/bin/sh\n# keepalived notify: <type> <name> <state> <priority>\n\
                     echo \"$(date +%s.%N) $3\" >> {events}\n",
                    events = events.display()
                ),
            )?;
            // The usual AWS pattern: on becoming master, move the Elastic IP here. A clean
            // environment with the emulator's static credentials; no config files read.
            fs::write(
                &master,
                format!(
                    "#!/bin/sh\nexec env -i PATH=/usr/bin:/bin AWS_ACCESS_KEY_ID={key} \
                     AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION={REGION} \
                     AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null \
                     AWS_SHARED_CREDENTIALS_FILE=/dev/null \\\n  {cli} ec2 associate-address \
                     --allow-reassociation --allocation-id {allocation} \
                     --network-interface-id {interface} --private-ip-address {ip} \
                     --endpoint-url {endpoint} >> {log} 2>&1\n",
                    key = ACCESS_KEY_ID,
                    secret = SECRET_ACCESS_KEY,
                    cli = cli.display(),
                    allocation = world.allocation_id,
                    interface = node.network_interface_id,
                    ip = node.private_ip,
                    endpoint = world.agent_endpoint(),
                    log = dir.join(format!("aws-{id}.log")).display(),
                ),
            )?;
            for script in [&notify, &master] {
                fs::set_permissions(script, fs::Permissions::from_mode(0o755))?;
            }
            let peers: Vec<String> = ids
                .iter()
                .filter(|&&peer| peer != id)
                .map(|&peer| format!("        {}", cluster.network().address(peer)))
                .collect();
            let version = settings.version();
            let config = format!(
                "global_defs {{\n    router_id node{id}\n    script_user root\n    \
                 enable_script_security\n    vrrp_version {version}\n}}\n\n\
                 vrrp_instance ha_bench {{\n    state BACKUP\n    interface eth0\n    \
                 virtual_router_id 51\n    priority {priority}\n    advert_int {advert}\n    \
                 unicast_src_ip {src}\n    unicast_peer {{\n{peers}\n    }}\n    \
                 virtual_ipaddress {{\n        {vip}/32 dev eth0\n    }}\n    \
                 notify_master \"{master}\"\n    notify \"{notify}\"\n}}\n",
                vip = {
                    let [a, b, c, _] = cluster.network().host_address().octets();
                    std::net::Ipv4Addr::new(a, b, c, 100)
                },
                advert = settings.advert_int,
                src = cluster.network().address(id),
                peers = peers.join("\n"),
                master = master.display(),
                notify = notify.display(),
            );
            fs::write(dir.join(format!("keepalived-{id}.conf")), config)?;
        }
        Ok(Keepalived {
            settings,
            dir,
            binary,
            instances: BTreeMap::new(),
            priorities,
        })
    }

    pub fn settings(&self) -> VrrpSettings {
        self.settings
    }

    pub fn priority(&self, id: u64) -> u32 {
        self.priorities.get(&id).copied().unwrap_or(0)
    }

    /// The node with the highest priority (the master when all run).
    pub fn preferred(&self) -> u64 {
        self.priorities
            .iter()
            .max_by_key(|(_, &p)| p)
            .map(|(&id, _)| id)
            .unwrap_or(1)
    }

    /// Starts keepalived in node `id`'s namespace (foreground parent, VRRP only).
    pub fn start(&mut self, cluster: &Cluster, id: u64) -> Result<()> {
        ensure!(
            !self.instances.contains_key(&id),
            "keepalived already runs on node {id}"
        );
        let config = self.dir.join(format!("keepalived-{id}.conf"));
        let events = self.dir.join(format!("keepalived-{id}.events"));
        let log = self.dir.join(format!("keepalived-{id}.log"));
        // A crashed VRRP child is reparented to this machine's pid 1, which may leave it a
        // zombie: keepalived would take its pid file for a running daemon and refuse to start.
        for pid_file in [format!("main-{id}.pid"), format!("vrrp-{id}.pid")] {
            let _ = fs::remove_file(self.dir.join(pid_file));
        }
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut command = cluster.network().command_in(id, &self.binary);
        command
            .arg("--dont-fork")
            .arg("--log-console")
            .arg("--vrrp")
            .arg("--use-file")
            .arg(&config)
            .arg("--pid")
            .arg(self.dir.join(format!("main-{id}.pid")))
            .arg("--vrrp_pid")
            .arg(self.dir.join(format!("vrrp-{id}.pid")))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let parent = command
            .spawn()
            .with_context(|| format!("cannot start keepalived on node {id}"))?;
        self.instances.insert(
            id,
            Instance {
                parent,
                config,
                events,
                log,
                stopped: false,
            },
        );
        Ok(())
    }

    pub fn start_all(&mut self, cluster: &Cluster) -> Result<()> {
        for id in cluster.ids() {
            self.start(cluster, id)?;
        }
        Ok(())
    }

    /// The parent's pid and its children's (the VRRP process).
    pub fn pids(&mut self, id: u64) -> Result<Vec<i32>> {
        let instance = self
            .instances
            .get_mut(&id)
            .ok_or_else(|| anyhow!("keepalived does not run on node {id}"))?;
        if let Some(status) = instance.parent.try_wait()? {
            bail!(
                "keepalived on node {id} exited ({status}); log {}:\n{}",
                instance.log.display(),
                crate::system::tail(&instance.log, 20)
            );
        }
        let parent = instance.parent.id() as i32;
        let mut pids = vec![parent];
        let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
        Ok(pids)
    }

    /// Waits until node `id`'s parent has forked its VRRP child.
    pub fn wait_for_child(&mut self, id: u64, timeout: Duration) -> Result<Vec<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids(id)?;
            if pids.len() >= 2 {
                return Ok(pids);
            }
            ensure!(
                Instant::now() < deadline,
                "keepalived on node {id} forked no VRRP child within {} ms",
                timeout.as_millis()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A crash: SIGSTOP the parent (so it cannot respawn the child), SIGKILL the VRRP child,
    /// SIGKILL the parent; reaps the parent.
    pub fn crash(&mut self, id: u64) -> Result<()> {
        let pids = self.pids(id)?;
        let parent = Pid::from_raw(pids[0]);
        let _ = kill(parent, Signal::SIGSTOP);
        for &child in &pids[1..] {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        let _ = kill(parent, Signal::SIGKILL);
        let mut instance = self
            .instances
            .remove(&id)
            .ok_or_else(|| anyhow!("keepalived does not run on node {id}"))?;
        wait_with_timeout(&mut instance.parent, Duration::from_secs(10))?;
        // The child is reparented to init (or the harness) and reaped there; wait for it.
        for &child in &pids[1..] {
            for _ in 0..500 {
                if !Path::new(&format!("/proc/{child}/stat")).exists()
                    || fs::read_to_string(format!("/proc/{child}/stat"))
                        .map(|s| s.contains(") Z"))
                        .unwrap_or(true)
                {
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    /// A hang: SIGSTOP of the parent and the VRRP child.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let pids = self.pids(id)?;
        for &pid in &pids {
            kill(Pid::from_raw(pid), Signal::SIGSTOP)?;
        }
        if let Some(instance) = self.instances.get_mut(&id) {
            instance.stopped = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> Result<()> {
        let pids = self.pids(id)?;
        for &pid in pids.iter().rev() {
            kill(Pid::from_raw(pid), Signal::SIGCONT)?;
        }
        if let Some(instance) = self.instances.get_mut(&id) {
            instance.stopped = false;
        }
        Ok(())
    }

    /// SIGKILLs every keepalived this started.
    pub fn stop_all(&mut self) {
        let ids: Vec<u64> = self.instances.keys().copied().collect();
        for id in ids {
            if self.instances.get(&id).is_some_and(|i| i.stopped) {
                let _ = self.resume(id);
            }
            let _ = self.crash(id);
        }
    }

    /// Node `id`'s VRRP state transitions: (epoch seconds, state), in order.
    pub fn events(&self, id: u64) -> Vec<(f64, String)> {
        let path = self.dir.join(format!("keepalived-{id}.events"));
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (time, state) = line.split_once(' ')?;
                Some((time.parse().ok()?, state.trim().to_string()))
            })
            .collect()
    }

    /// The last state node `id` announced, if any.
    pub fn state(&self, id: u64) -> Option<String> {
        self.events(id).last().map(|(_, state)| state.clone())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self, id: u64) -> Option<&Path> {
        self.instances.get(&id).map(|i| i.config.as_path())
    }

    pub fn events_path(&self, id: u64) -> Option<&Path> {
        self.instances.get(&id).map(|i| i.events.as_path())
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop_all();
    }
}
