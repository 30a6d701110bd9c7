//! Membership observers: every ~500 ms, `swim_members` on every node that is up. The views
//! answer "does every live node see every other live node alive" (convergence, heal time),
//! "does every live node see this victim dead" (crash detection), and collect false failure
//! declarations: an observer's view of a peer going from alive or suspect to dead while the
//! harness had done nothing to the peer, the observer or the link between them within
//! [`EXCUSE_WINDOW`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use super::cluster::{Cluster, SharedTruth, Status, call};

/// How often each live node is asked for its members.
const POLL: Duration = Duration::from_millis(500);
/// How long after a disruption a dead declaration is blamed on it: longer than the LAN preset's
/// longest suspicion (β · α · probe interval = 24 s) plus a probe.
const EXCUSE_WINDOW: Duration = Duration::from_secs(30);

/// A member's state in one view, best state first when a peer is listed more than once (an old
/// generation dead, the restarted one alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seen {
    /// Alive.
    Alive,
    /// Suspect.
    Suspect,
    /// Left gracefully.
    Left,
    /// Declared dead.
    Dead,
}

/// One observer's latest view.
#[derive(Debug, Clone)]
struct View {
    at: Instant,
    members: HashMap<usize, Seen>,
}

/// A false failure declaration.
#[derive(Debug, Clone)]
pub(crate) struct FalseFailure {
    /// Who declared it.
    pub(crate) observer: usize,
    /// Whom.
    pub(crate) peer: usize,
    /// When, since the observer started.
    pub(crate) after: Duration,
}

#[derive(Debug, Default)]
struct Views {
    latest: Vec<Option<View>>,
    false_pairs: BTreeSet<(usize, usize)>,
    false_log: Vec<FalseFailure>,
}

/// The observer task and its views.
#[derive(Debug)]
pub(crate) struct Observer {
    views: Arc<Mutex<Views>>,
    truth: SharedTruth,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

pub(crate) fn parse(v: &Value, peers: &[String]) -> Option<HashMap<usize, Seen>> {
    let mut out = HashMap::new();
    for m in v.as_array()? {
        let Some(i) = peers
            .iter()
            .position(|p| Some(p.as_str()) == m["peer"].as_str())
        else {
            continue;
        };
        let seen = match m["state"].as_str()? {
            "alive" => Seen::Alive,
            "suspect" => Seen::Suspect,
            "left" => Seen::Left,
            _ => Seen::Dead,
        };
        let e = out.entry(i).or_insert(seen);
        *e = (*e).min(seen);
    }
    Some(out)
}

impl Observer {
    /// Starts polling the cluster's nodes.
    pub(crate) fn start(cluster: &Cluster) -> Self {
        let n = cluster.len();
        let views = Arc::new(Mutex::new(Views {
            latest: vec![None; n],
            ..Views::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (views, stop, truth) = (views.clone(), stop.clone(), cluster.truth.clone());
            let clients = cluster.fast.clone();
            let peers = cluster.peers.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let tick = tokio::time::sleep(POLL);
                    let up = truth.lock().expect("truth lock").up();
                    let polls = up.iter().map(|&o| {
                        let client = &clients[o];
                        async move { (o, call(client, "swim_members", Value::Null).await) }
                    });
                    let answers = futures::future::join_all(polls).await;
                    let at = Instant::now();
                    {
                        let truth = truth.lock().expect("truth lock");
                        let mut guard = views.lock().expect("views lock");
                        let views = &mut *guard;
                        for o in 0..n {
                            if truth.status[o] != Status::Up {
                                views.latest[o] = None;
                            }
                        }
                        for (o, answer) in answers {
                            let Some(members) = answer.ok().and_then(|v| parse(&v, &peers)) else {
                                continue;
                            };
                            if truth.status[o] != Status::Up {
                                continue;
                            }
                            if let Some(prev) = views.latest[o].as_ref() {
                                for (&p, &seen) in &members {
                                    let before = prev.members.get(&p).copied();
                                    let declared = seen == Seen::Dead
                                        && matches!(before, Some(Seen::Alive | Seen::Suspect));
                                    if declared
                                        && !truth.excused(o, p, prev.at, EXCUSE_WINDOW)
                                        && !truth.excused(o, p, at, EXCUSE_WINDOW)
                                    {
                                        views.false_pairs.insert((o, p));
                                        views.false_log.push(FalseFailure {
                                            observer: o,
                                            peer: p,
                                            after: at - started,
                                        });
                                    }
                                }
                            }
                            views.latest[o] = Some(View { at, members });
                        }
                    }
                    tick.await;
                }
            })
        };
        Self {
            views,
            truth: cluster.truth.clone(),
            stop,
            task: Some(task),
        }
    }

    /// Whether every up node has a view newer than `after` in which every other up node is
    /// alive.
    pub(crate) fn converged(&self, after: Instant) -> bool {
        let up = self.truth.lock().expect("truth lock").up();
        let views = self.views.lock().expect("views lock");
        up.iter().all(|&o| {
            views.latest[o].as_ref().is_some_and(|v| {
                v.at >= after
                    && up
                        .iter()
                        .filter(|&&p| p != o)
                        .all(|p| v.members.get(p) == Some(&Seen::Alive))
            })
        })
    }

    /// What each up node's latest view lacks for convergence (for reports).
    pub(crate) fn unconverged(&self) -> Vec<String> {
        let up = self.truth.lock().expect("truth lock").up();
        let views = self.views.lock().expect("views lock");
        let mut out = Vec::new();
        for &o in &up {
            match &views.latest[o] {
                None => out.push(format!("node {o}: no view")),
                Some(v) => {
                    for &p in up.iter().filter(|&&p| p != o) {
                        let seen = v.members.get(&p);
                        if seen != Some(&Seen::Alive) {
                            out.push(format!("node {o} sees node {p} as {seen:?}"));
                        }
                    }
                }
            }
        }
        out
    }

    /// Waits until [`Observer::converged`] with views newer than `after`; the time from `after`,
    /// or `None` after `limit`.
    pub(crate) async fn wait_converged(&self, after: Instant, limit: Duration) -> Option<Duration> {
        loop {
            if self.converged(after) {
                return Some(after.elapsed());
            }
            if after.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether every up node other than `victim` has a view newer than `after` in which
    /// `victim` is dead, left, or absent.
    fn all_see_gone(&self, victim: usize, after: Instant) -> bool {
        let up = self.truth.lock().expect("truth lock").up();
        let views = self.views.lock().expect("views lock");
        up.iter().filter(|&&o| o != victim).all(|&o| {
            views.latest[o].as_ref().is_some_and(|v| {
                v.at >= after
                    && !matches!(v.members.get(&victim), Some(Seen::Alive | Seen::Suspect))
            })
        })
    }

    /// For each `(victim, failed at)`, the time until every live node saw it dead; `None` for a
    /// victim not detected within `limit`.
    pub(crate) async fn wait_detected(
        &self,
        victims: &[(usize, Instant)],
        limit: Duration,
    ) -> Vec<Option<Duration>> {
        let start = Instant::now();
        let mut found = vec![None; victims.len()];
        while found.iter().any(Option::is_none) && start.elapsed() < limit {
            for (k, &(v, at)) in victims.iter().enumerate() {
                if found[k].is_none() && self.all_see_gone(v, at) {
                    found[k] = Some(at.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found
    }

    /// The false failure declarations so far: distinct (observer, peer) pairs, and each
    /// declaration.
    pub(crate) fn false_failures(&self) -> (usize, Vec<FalseFailure>) {
        let views = self.views.lock().expect("views lock");
        (views.false_pairs.len(), views.false_log.clone())
    }

    /// Stops polling.
    pub(crate) async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
