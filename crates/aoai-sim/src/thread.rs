//! The simulator on a thread of its own, for synchronous code (examples, CLI demos, plain
//! `#[test]`s) that has no actix runtime to start it on.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::SimConfig;
use crate::engine::Engine;
use crate::error::SimError;
use crate::server::ListenerInfo;
use crate::stats::SimStats;

enum Command {
    SetRefusing {
        deployment: String,
        refusing: bool,
        done: oneshot::Sender<Result<(), SimError>>,
    },
    AdvanceClock {
        by: Duration,
        done: oneshot::Sender<Result<(), SimError>>,
    },
}

struct Ready {
    listeners: Vec<ListenerInfo>,
    managed_identity_endpoint: Option<String>,
    engine: Arc<Engine>,
}

/// A simulator running on its own thread (with its own actix system) until
/// [`stop`](Self::stop) or drop.
///
/// The control methods block: call them from synchronous code, not from inside an async task.
///
/// ```
/// use aoai_sim::{DeploymentSpec, SimConfig, SimThread};
///
/// let sim = SimThread::start(SimConfig::default().deployment(DeploymentSpec::new("gpt-4o")))?;
/// assert!(sim.base_url().starts_with("http://127.0.0.1:"));
/// assert_eq!(sim.stats().deployment("gpt-4o").requests, 0);
/// sim.stop();
/// # Ok::<(), aoai_sim::SimError>(())
/// ```
pub struct SimThread {
    listeners: Vec<ListenerInfo>,
    managed_identity_endpoint: Option<String>,
    engine: Arc<Engine>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimThread")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl SimThread {
    /// Start the simulator on a new thread and wait until it listens.
    pub fn start(config: SimConfig) -> Result<SimThread, SimError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Ready, SimError>>();
        let (commands, mut inbox) = mpsc::unbounded_channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("aoai-sim".to_owned())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let sim = match crate::start(config).await {
                        Ok(sim) => sim,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let ready = Ready {
                        listeners: sim.listeners(),
                        managed_identity_endpoint: sim.managed_identity_endpoint(),
                        engine: sim.engine(),
                    };
                    if ready_tx.send(Ok(ready)).is_err() {
                        sim.stop().await;
                        return;
                    }
                    // Serve commands until the sender is dropped (stop or drop of SimThread).
                    while let Some(command) = inbox.recv().await {
                        match command {
                            Command::SetRefusing {
                                deployment,
                                refusing,
                                done,
                            } => {
                                let _ = done.send(sim.set_refusing(&deployment, refusing).await);
                            }
                            Command::AdvanceClock { by, done } => {
                                let _ = done.send(sim.advance_clock(by).await);
                            }
                        }
                    }
                    sim.stop().await;
                });
            })
            .map_err(|err| SimError::Thread(format!("cannot spawn the simulator thread: {err}")))?;
        match ready_rx.recv() {
            Ok(Ok(ready)) => Ok(SimThread {
                listeners: ready.listeners,
                managed_identity_endpoint: ready.managed_identity_endpoint,
                engine: ready.engine,
                commands: Some(commands),
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            Err(_) => {
                let _ = thread.join();
                Err(SimError::Thread(
                    "the simulator thread ended before it listened".to_owned(),
                ))
            }
        }
    }

    /// The shared listener's base URL, `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> String {
        self.listeners
            .first()
            .map(|listener| listener.url.clone())
            .unwrap_or_default()
    }

    /// The base URL of the listener serving `deployment`.
    pub fn endpoint_for(&self, deployment: &str) -> Option<String> {
        self.listeners
            .iter()
            .find(|listener| listener.deployments.iter().any(|name| name == deployment))
            .map(|listener| listener.url.clone())
    }

    /// The managed-identity endpoint, when configured.
    pub fn managed_identity_endpoint(&self) -> Option<String> {
        self.managed_identity_endpoint.clone()
    }

    /// Every listener, the shared one first.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.engine.stats()
    }

    /// See [`SimHandle::set_refusing`](crate::SimHandle::set_refusing).
    pub fn set_refusing(&self, deployment: &str, refusing: bool) -> Result<(), SimError> {
        self.call(|done| Command::SetRefusing {
            deployment: deployment.to_owned(),
            refusing,
            done,
        })
    }

    /// See [`SimHandle::advance_clock`](crate::SimHandle::advance_clock).
    pub fn advance_clock(&self, by: Duration) -> Result<(), SimError> {
        self.call(|done| Command::AdvanceClock { by, done })
    }

    fn call(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), SimError>>) -> Command,
    ) -> Result<(), SimError> {
        let gone = || SimError::Thread("the simulator thread has stopped".to_owned());
        let (done, answer) = oneshot::channel();
        let commands = self.commands.as_ref().ok_or_else(gone)?;
        commands.send(command(done)).map_err(|_| gone())?;
        answer.blocking_recv().map_err(|_| gone())?
    }

    /// Stop the simulator and wait for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeploymentSpec, OutageSpec};

    #[test]
    fn serves_and_stops_from_synchronous_code() {
        let sim = SimThread::start(
            SimConfig::default()
                .manual_clock()
                .deployment(DeploymentSpec::new("a"))
                .deployment(
                    DeploymentSpec::new("b")
                        .own_listener()
                        .outage(OutageSpec::refuse(5, 10)),
                ),
        );
        let sim = match sim {
            Ok(sim) => sim,
            Err(err) => panic!("start: {err}"),
        };
        assert_eq!(sim.endpoint_for("a"), Some(sim.base_url()));
        let own = sim.endpoint_for("b").unwrap_or_default();
        assert_ne!(own, sim.base_url());
        assert_eq!(sim.endpoint_for("c"), None);
        let addr = own
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        assert!(std::net::TcpStream::connect(&addr).is_ok());
        assert!(sim.advance_clock(Duration::from_secs(5)).is_ok());
        assert!(std::net::TcpStream::connect(&addr).is_err());
        assert!(sim.set_refusing("b", false).is_ok());
        assert!(std::net::TcpStream::connect(&addr).is_ok());
        assert!(matches!(
            sim.set_refusing("a", true),
            Err(SimError::SharedListener(_))
        ));
        let base = sim.base_url();
        sim.stop();
        let base_addr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        assert!(std::net::TcpStream::connect(base_addr).is_err());
    }

    #[test]
    fn invalid_config_is_reported() {
        assert!(matches!(
            SimThread::start(SimConfig::default()),
            Err(SimError::Invalid(_))
        ));
    }
}
