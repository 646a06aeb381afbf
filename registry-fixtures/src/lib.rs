//! Fixtures for kvpush tests, demos and benchmarks.
//!
//! * [`generate_workspace`]: a KubeVirt-shaped Bazel workspace whose
//!   `bazel-bin` holds the `docker save`-style tarballs rules_docker v0.16
//!   builds (go-containerregistry's legacy or compressed tarball writer), with
//!   deterministic content of a chosen total size; optionally also the
//!   push-target parts `bazel build //:push-*` leaves (`push_parts`).
//! * [`generate_rules_img_workspace`]: a rules_img workspace (`image_push`
//!   targets, deploy manifests, runfiles in the three layouts) whose shallow
//!   base layers come from an origin registry seeded from [`base_images`].
//! * [`generate_rules_oci_workspace`]: a rules_oci workspace (`oci_push`
//!   targets, `oci_image` layout directories, copied or symlinked blobs).
//! * [`docker`]: helpers to hand-craft (broken) tarballs: [`build_archive`],
//!   [`ArchiveParts`], [`write_docker_archive`], [`layer_tar`], [`image_config`].
//! * [`Registry`]: a real CNCF distribution registry (`docker-registry`) on
//!   loopback, started through `start-registry.sh` (kinds plain, htpasswd,
//!   tls, htpasswd-tls, readonly, token), with access-log inspection, plus
//!   skopeo helpers; [`Relay`] puts a second origin ("blob storage") behind
//!   one, to see where credentials go; [`Shaper`] puts a far network link
//!   (round trip, shared bandwidth cap) in front of one, for benches.
//! * [`FaultProxy`]: a fault-injecting HTTP proxy to put in front of a
//!   [`Registry`] (errors, resets, stalls, truncated answers, 413s, slowness).

mod chunked;
pub mod content;
pub mod docker;
pub mod faultproxy;
pub mod fuzzcorpus;
pub mod prng;
pub mod registry;
pub mod relay;
pub mod shaper;
pub mod tarfmt;
mod token;
pub mod workspace;

pub use docker::{
    build_archive, docker_archive_bytes, gzip, image_config, image_config_for, layer_tar,
    random_layer, read_archive, read_manifest, sha256_digest, sha256_hex, write_docker_archive,
    ArchiveFormat, ArchiveParts, ManifestEntry, TestImage,
};
pub use faultproxy::{Fault, FaultPlan, FaultProxy, Outcome, ProxyEvent};
pub use registry::{
    skopeo_copy, skopeo_copy_to_dir, skopeo_inspect, skopeo_inspect_raw, AccessLogLine, Registry,
    RegistryKind,
};
pub use relay::{Origin, Relay, Seen};
pub use shaper::{LinkShape, Shaper, ShaperStats};
pub use token::{TokenPolicy, TokenRequest, TokenUser};
pub use workspace::rules_img::{
    add_index_target, base_images, generate_rules_img_workspace, write_base_layouts,
    write_image_layouts, RulesImgLayout, RulesImgSpec, RulesImgTarget, RulesImgWorkspace,
};
pub use workspace::rules_oci::{
    generate_rules_oci_workspace, write_oci_image_layout, BlobStyle, RulesOciSpec, RulesOciTarget,
    RulesOciWorkspace, RULES_OCI_LOAD,
};
pub use workspace::{
    bin_dir, generate_workspace, go_manifest_json, GeneratedImage, Workspace, WorkspaceSpec,
    OTHER_IMAGES, SINGLE_IMAGES,
};

/// Parse a size like `8MiB`, `1GiB`, `512KiB`, `100MB`, `4096` into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        _ => return None,
    };
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests;
