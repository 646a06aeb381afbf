//! From raw flags to a [`Config`]: checks each flag against the others,
//! the catalog of targets and the environment (PUSH_TARGETS, BUILD_ARCH,
//! SSL_CERT_FILE), reads `--password-stdin`, and refuses before any work is
//! done. It owns the rules of what may be combined; it must not define
//! flags (that is `args`) nor run anything (that is `crate::commands`).

use std::path::PathBuf;

use super::args::{CommonArgs, PushArgs};
use super::kubevirt_env::KubevirtEnv;
use crate::config::Config;
use crate::push;
use crate::push::manifest_list::{self, DEFAULT_CHILD_TAG};
use crate::registry;
use crate::registry::credentials::{Credential, FoundCredential, Secret};
use crate::registry::media::Format;
use crate::registry::retry::RetryPolicy;
use crate::targets::{self, Catalog};

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Push,
    /// `kvpush manifest`: lists from images already in the registry.
    Manifest,
}

/// `--arch-bin ARCH=PATH` values: GOARCH names (each once) and bazel-bin trees.
fn parse_arch_bins(values: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for v in values {
        let (arch, path) = v.split_once('=').ok_or_else(|| {
            format!("--arch-bin {v:?}: give ARCH=PATH, e.g. arm64=_out/aarch64/bazel-bin")
        })?;
        let arch = manifest_list::goarch(arch)?.to_string();
        if out.iter().any(|(a, _)| *a == arch) {
            return Err(format!("--arch-bin names {arch} twice"));
        }
        let bin = push::plan::bazel_bin_at(std::path::Path::new(path))
            .map_err(|e| format!("--arch-bin {v}: {e}"))?;
        out.push((arch, bin));
    }
    Ok(out)
}

/// Drop repeated values, keeping the first of each in order.
fn dedup(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

pub(super) fn validate_common(common: &CommonArgs) -> Result<(), String> {
    for tag in &common.tags {
        push::plan::validate_tag(tag)?;
    }
    if let Some(registry) = &common.registry {
        if registry.contains("://") {
            return Err(format!(
                "--registry {registry:?} has a scheme: give host and path only (e.g. quay.io/kubevirt); use --insecure for plain HTTP"
            ));
        }
        // Any image name will do to check registry and prefix together.
        for prefix in &common.image_prefixes {
            push::Destination::new(registry, prefix, "virt-api", &common.tags[0])?;
        }
    }
    Ok(())
}

impl PushArgs {
    pub(super) fn into_config(self, catalog: Catalog, mode: Mode) -> Result<Config, String> {
        validate_common(&self.common)?;
        let format = Format::parse(&self.format)?;
        let arch_bins = parse_arch_bins(&self.arch_bins)?;
        let arches = match mode {
            Mode::Manifest => {
                if !arch_bins.is_empty() {
                    return Err("--arch-bin pushes images; `kvpush manifest` only lists images already pushed: drop one of them".into());
                }
                if self.dry_run {
                    return Err("`kvpush manifest` has no --dry-run: it reads the registry to build the lists; `kvpush list` shows the images".into());
                }
                let mut arches = manifest_list::parse_arches(&self.arches)?;
                if arches.is_empty() {
                    let build_arch = std::env::var("BUILD_ARCH").unwrap_or_default();
                    arches = manifest_list::parse_arches(&[build_arch])
                        .map_err(|e| format!("BUILD_ARCH: {e}"))?;
                }
                if arches.is_empty() {
                    return Err("name the architectures to list: --arch amd64,arm64,s390x (or set BUILD_ARCH)".into());
                }
                arches
            }
            Mode::Push => {
                if !self.arches.is_empty() {
                    return Err("--arch is for `kvpush manifest`; to push several architectures' trees use --arch-bin ARCH=PATH".into());
                }
                if arch_bins.is_empty()
                    && (self.allow_missing || self.child_tag != DEFAULT_CHILD_TAG)
                {
                    return Err("--allow-missing and --child-tag apply to `kvpush manifest` and --arch-bin runs".into());
                }
                arch_bins.iter().map(|(a, _)| a.clone()).collect()
            }
        };
        if !arches.is_empty() {
            manifest_list::validate_child_tag(&self.child_tag, &self.common.tags, &arches)?;
        }
        let mut names = self.targets;
        // No target named: KubeVirt's push script environment, whole.
        let kubevirt = if names.is_empty() {
            KubevirtEnv::read()
        } else {
            KubevirtEnv::default()
        };
        if names.is_empty() {
            names = super::kubevirt_env::push_targets();
        }
        if names.is_empty() {
            return Err("name what to push: `kvpush all`, one or more targets (e.g. virt-api), or set PUSH_TARGETS; see kvpush --help".into());
        }
        let selections = targets::resolve(&catalog, &names)?;
        let registry = self.common.registry.ok_or(
            "no registry: pass --registry (e.g. --registry quay.io/kubevirt) or set DOCKER_PREFIX",
        )?;
        if self.jobs == 0 {
            return Err("--jobs must be at least 1".into());
        }
        registry::transport::check_ssl_cert_file()?;
        let ca_certs = registry::transport::load_ca_certs(&self.ca_certs)?;
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            // The destination's host: origins never get the pair.
            let host =
                push::Destination::new(&registry, "", "virt-api", &self.common.tags[0])?.host;
            registry::trust::use_client_cert(&host, cert, key)?;
        }
        let credential = match self.username {
            Some(username) if self.password_stdin => Some(read_password_stdin(username)?),
            _ => None,
        };
        let mut tags = self.common.tags;
        if let Some(alt) = kubevirt.tag_alt {
            push::plan::validate_tag(&alt).map_err(|e| format!("DOCKER_TAG_ALT: {e}"))?;
            tags.push(alt);
        }
        let tags = dedup(tags);
        let alt_prefixes: Vec<String> = kubevirt.image_prefix_alt.into_iter().collect();
        for prefix in &alt_prefixes {
            push::Destination::new(&registry, prefix, "virt-api", &tags[0])
                .map_err(|e| format!("IMAGE_PREFIX_ALT: {e}"))?;
        }
        Ok(Config {
            catalog,
            selections,
            registry,
            tags,
            image_prefixes: dedup(self.common.image_prefixes),
            workspace: self.common.workspace,
            jobs: self.jobs,
            dry_run: self.dry_run,
            insecure: self.insecure,
            ca_certs,
            digests_dir: self.digests_dir,
            alt_prefixes,
            kubevirt_digests: kubevirt.digests,
            compression_level: self.compression_level,
            credential,
            retry: RetryPolicy {
                attempts: self.retries,
                deadline: self.retry_time,
                connect_timeout: self.connect_timeout,
                stall_timeout: self.stall_timeout,
                ..RetryPolicy::default()
            },
            chunk_size: self.chunk_size,
            output: self.output,
            quiet: self.quiet,
            verbose: self.verbose,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.or_else(crate::cache::default_dir)
            },
            source: self.common.source,
            format,
            arches: if mode == Mode::Manifest {
                arches
            } else {
                Vec::new()
            },
            arch_bins,
            child_tag: self.child_tag,
            allow_missing: self.allow_missing,
        })
    }
}

/// `--password-stdin`: the first line of standard input, never argv.
fn read_password_stdin(username: String) -> Result<FoundCredential, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("--password-stdin: standard input held no password".into());
    }
    Ok(FoundCredential {
        credential: Credential::Basic {
            username,
            password: Secret::new(password),
        },
        source: "--username/--password-stdin".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("kvpush").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.push.into_config(Catalog::builtin("test"), Mode::Push)
    }

    #[test]
    fn flags_become_a_config() {
        let c = parse(&[
            "all",
            "--registry",
            "localhost:5000/kubevirt",
            "--tag",
            "a",
            "--tag",
            "b",
            "-j",
            "3",
        ])
        .unwrap();
        assert_eq!(c.selections.len(), 7);
        assert_eq!(c.tags, vec!["a", "b"]);
        assert_eq!(c.jobs, 3);
        let c = parse(&[
            "push-virt-api",
            "--registry",
            "quay.io/kubevirt",
            "--image-prefix",
            "kv-",
        ])
        .unwrap();
        assert_eq!(c.selections.len(), 1);
        assert_eq!(c.image_prefixes, vec!["kv-"]);
    }

    #[test]
    fn invalid_input_is_refused_before_any_work() {
        assert!(parse(&["all", "--registry", "https://quay.io/kubevirt"])
            .unwrap_err()
            .contains("scheme"));
        assert!(
            parse(&["all", "--registry", "quay.io/kubevirt", "--tag", "bad tag"])
                .unwrap_err()
                .contains("invalid tag")
        );
        assert!(parse(&[
            "all",
            "--registry",
            "quay.io/kubevirt",
            "--image-prefix",
            "Bad/"
        ])
        .is_err());
        assert!(parse(&["nope", "--registry", "quay.io/kubevirt"])
            .unwrap_err()
            .contains("unknown target"));
        assert!(parse(&["all", "--registry", "quay.io/kubevirt", "--jobs", "0"]).is_err());
    }

    #[test]
    fn format_is_docker_unless_oci_is_asked_for() {
        assert_eq!(
            parse(&["all", "--registry", "r.io/k"]).unwrap().format,
            Format::Docker
        );
        let c = parse(&["all", "--registry", "r.io/k", "--format", "oci"]).unwrap();
        assert_eq!(c.format, Format::Oci);
        assert!(parse(&["all", "--registry", "r.io/k", "--format", "v1"]).is_err());
    }

    fn parse_manifest(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("kvpush").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.push
            .into_config(Catalog::builtin("test"), Mode::Manifest)
    }

    #[test]
    fn manifest_flags_map_kubevirt_arch_names_and_check_the_child_tag() {
        let c = parse_manifest(&[
            "all",
            "--registry",
            "quay.io/kubevirt",
            "--tag",
            "v1",
            "--arch",
            "x86_64,aarch64",
            "--arch",
            "s390x",
        ])
        .unwrap();
        assert_eq!(c.arches, vec!["amd64", "arm64", "s390x"]);
        assert_eq!(c.child_tag, DEFAULT_CHILD_TAG);
        let err = parse_manifest(&[
            "all",
            "--registry",
            "quay.io/kubevirt",
            "--arch",
            "amd64",
            "--child-tag",
            "{tag}",
        ])
        .unwrap_err();
        assert!(err.contains("no {arch}"), "{err}");
        let err = parse_manifest(&[
            "all",
            "--registry",
            "r.io/k",
            "--arch",
            "amd64",
            "--dry-run",
        ])
        .unwrap_err();
        assert!(err.contains("no --dry-run"), "{err}");
    }

    #[test]
    fn push_only_flags_and_manifest_only_flags_are_not_mixed() {
        let err = parse(&["all", "--registry", "r.io/k", "--arch", "amd64"]).unwrap_err();
        assert!(err.contains("--arch-bin"), "{err}");
        let err = parse(&["all", "--registry", "r.io/k", "--allow-missing"]).unwrap_err();
        assert!(err.contains("--allow-missing"), "{err}");
        let err = parse(&["all", "--registry", "r.io/k", "--arch-bin", "amd64"]).unwrap_err();
        assert!(err.contains("ARCH=PATH"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bin = format!("x86_64={}", dir.path().display());
        let err = parse(&[
            "all",
            "--registry",
            "r.io/k",
            "--arch-bin",
            &bin,
            "--arch-bin",
            &bin,
        ])
        .unwrap_err();
        assert!(err.contains("amd64 twice"), "{err}");
        let c = parse(&["all", "--registry", "r.io/k", "--arch-bin", &bin]).unwrap();
        assert_eq!(
            c.arch_bins,
            vec![("amd64".to_string(), dir.path().to_path_buf())]
        );
    }

    #[test]
    fn retry_and_chunk_flags_reach_the_config() {
        let c = parse(&[
            "all",
            "--registry",
            "localhost:5000",
            "--retries",
            "3",
            "--retry-time",
            "45s",
            "--stall-timeout",
            "2s",
            "--chunk-size",
            "1MiB",
        ])
        .unwrap();
        assert_eq!(c.retry.attempts, 3);
        assert_eq!(c.retry.deadline, Duration::from_secs(45));
        assert_eq!(c.retry.stall_timeout, Duration::from_secs(2));
        assert_eq!(c.chunk_size, 1 << 20);
    }
}
