//! The set-up most integration tests share, so a test reads as the
//! scenario it checks: a generated workspace ([`Fixture`]), a registry of
//! a chosen kind and the `ADDR/kubevirt` prefix kvpush pushes to; push
//! targets there, and check what landed with skopeo. Owns no assertion
//! beyond those of [`verify_with_skopeo`]; a test with another shape
//! (proxies, relays, two registries) builds its parts itself.

use std::ops::Deref;
use std::process::Command;

use kvpush_fixtures::{FaultPlan, FaultProxy, Registry, RegistryKind, WorkspaceSpec};

use super::{run_command, verify_with_skopeo, Fixture, Run};

/// A workspace, a registry and the prefix kvpush pushes to.
pub struct Scenario {
    pub fx: Fixture,
    pub registry: Registry,
    /// `ADDR/kubevirt`, the `--registry` of [`Scenario::push`].
    pub prefix: String,
}

impl Scenario {
    /// A small workspace ([`Fixture::small`]) and a plain registry.
    pub fn plain() -> Scenario {
        Scenario::small(RegistryKind::Plain)
    }

    /// A small workspace and a registry of `kind`.
    pub fn small(kind: RegistryKind) -> Scenario {
        Scenario::with(Fixture::small(), kind)
    }

    /// A workspace of `spec` and a registry of `kind`.
    pub fn new(spec: WorkspaceSpec, kind: RegistryKind) -> Scenario {
        Scenario::with(Fixture::new(spec), kind)
    }

    /// `fx` and a registry of `kind`.
    pub fn with(fx: Fixture, kind: RegistryKind) -> Scenario {
        let registry = Registry::start(kind);
        let prefix = format!("{}/kubevirt", registry.addr());
        Scenario {
            fx,
            registry,
            prefix,
        }
    }

    /// `kvpush --workspace WS TARGETS... --registry PREFIX ARGS...`, not run.
    pub fn push_command(&self, targets: &[&str], args: &[&str]) -> Command {
        self.command_to(&self.prefix, targets, args)
    }

    fn command_to(&self, prefix: &str, targets: &[&str], args: &[&str]) -> Command {
        let mut cmd = self.fx.command();
        cmd.args(targets).arg("--registry").arg(prefix).args(args);
        cmd
    }

    /// A [`FaultProxy`] following `plan` in front of the registry.
    pub fn proxy(&self, plan: FaultPlan) -> FaultProxy {
        FaultProxy::start(self.registry.addr(), plan)
    }

    /// [`Scenario::push`] through `proxy` (`--registry PROXY/kubevirt`);
    /// what lands is checked at the registry itself ([`Scenario::verify`]).
    pub fn push_through(&self, proxy: &FaultProxy, targets: &[&str], args: &[&str]) -> Run {
        let prefix = format!("{}/kubevirt", proxy.addr());
        run_command(self.command_to(&prefix, targets, args))
    }

    /// Push `targets` to the prefix, `args` after.
    pub fn push(&self, targets: &[&str], args: &[&str]) -> Run {
        run_command(self.push_command(targets, args))
    }

    /// [`Scenario::push`] from another workspace (another architecture's)
    /// to the same registry and prefix.
    pub fn push_from(&self, fx: &Fixture, targets: &[&str], args: &[&str]) -> Run {
        let mut cmd = fx.command();
        cmd.args(targets)
            .arg("--registry")
            .arg(&self.prefix)
            .args(args);
        run_command(cmd)
    }

    /// [`Scenario::push`] with the registry's user and password in
    /// `KVPUSH_USERNAME`/`KVPUSH_PASSWORD`.
    pub fn push_logged_in(&self, targets: &[&str], args: &[&str]) -> Run {
        let (user, password) = self.registry.credentials().expect("registry with a login");
        self.push_as(user, password, targets, args)
    }

    /// [`Scenario::push`] as `user` with `password` (`KVPUSH_USERNAME`/
    /// `KVPUSH_PASSWORD`).
    pub fn push_as(&self, user: &str, password: &str, targets: &[&str], args: &[&str]) -> Run {
        let mut cmd = self.push_command(targets, args);
        cmd.env("KVPUSH_USERNAME", user)
            .env("KVPUSH_PASSWORD", password);
        run_command(cmd)
    }

    /// `PREFIX/NAME:TAG`.
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.prefix)
    }

    /// Check `PREFIX/NAME:TAG` against the workspace image `name` with
    /// skopeo ([`verify_with_skopeo`]); returns the manifest digest.
    pub fn verify(&self, name: &str, tag: &str) -> String {
        verify_with_skopeo(
            &self.registry,
            &self.reference(name, tag),
            self.fx.image(name),
        )
    }

    /// [`Scenario::verify`] for every image of the workspace, in order.
    pub fn verify_all(&self, tag: &str) -> Vec<String> {
        self.fx
            .ws
            .images
            .iter()
            .map(|image| self.verify(&image.name, tag))
            .collect()
    }

    /// The registry's repositories.
    pub fn catalog(&self) -> Vec<String> {
        self.registry.catalog()
    }
}

/// The workspace's helpers (`image`, `kvpush`, `ws`, `dir`) on the scenario.
impl Deref for Scenario {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.fx
    }
}
