//! The bench's rules_img scenario: a generated rules_img workspace (the
//! dozen KubeVirt-like `image_push` targets on two shallow bases, at the
//! bench's scale) whose base images live in an origin registry, seeded once
//! with skopeo. Each round, against fresh destination registries: `kvpush
//! all` (own layers from the runfiles, base layers streamed or mounted from
//! the origin) versus `skopeo copy oci:<complete layout> docker://...` of
//! each image, one after another, as the sequential `bazel run //:push-X`
//! do (those layouts hold the base layers too: skopeo fetches nothing).
//! Owns the workspace, the origin and the origin's byte count; the timing,
//! the registries' storage figures and the report stay in `push.rs`.

use std::path::{Path, PathBuf};

use kvpush_fixtures::{
    generate_rules_img_workspace, skopeo_copy, write_base_layouts, write_image_layouts, Registry,
    RegistryKind, RulesImgSpec, RulesImgWorkspace,
};

use super::{Bench, Measure};

pub(super) struct RulesImgBench {
    /// Holds the base images the deploy manifests name.
    origin: Registry,
    ws: RulesImgWorkspace,
    /// `(name, skopeo source)` per image: a complete OCI layout.
    skopeo_sources: Vec<(String, String)>,
}

impl RulesImgBench {
    /// Generate the workspace and its complete layouts under `dir`, start
    /// the origin (its storage under `storage`) and seed it.
    pub(super) fn prepare(dir: &Path, storage: &Path, scale: u64) -> RulesImgBench {
        let origin = Registry::start_in(RegistryKind::Plain, storage);
        let addr = origin.addr().to_string();
        Self::prepare_for(dir, origin, &addr, scale)
    }

    /// [`prepare`](Self::prepare) with a started `origin`, which the deploy
    /// manifests name as `origin_addr` (a relay in front of it: the wan
    /// profile's shaper); seeded directly.
    pub(super) fn prepare_for(
        dir: &Path,
        origin: Registry,
        origin_addr: &str,
        scale: u64,
    ) -> RulesImgBench {
        let spec = RulesImgSpec {
            scale_bytes: scale,
            origin_registry: origin_addr.to_string(),
            ..RulesImgSpec::default()
        };
        let ws = generate_rules_img_workspace(&dir.join("ws"), &spec).unwrap();
        for (layout, repo, tag) in write_base_layouts(&dir.join("bases"), &ws.bases).unwrap() {
            skopeo_copy(
                &format!("oci:{}:{tag}", layout.display()),
                &format!("docker://{}/{repo}:{tag}", origin.addr()),
                &["--dest-tls-verify=false"],
            )
            .unwrap();
        }
        let skopeo_sources = write_image_layouts(&dir.join("layouts"), &ws.targets)
            .unwrap()
            .into_iter()
            .map(|(name, layout): (String, PathBuf)| {
                (name, format!("oci:{}:latest", layout.display()))
            })
            .collect();
        RulesImgBench {
            origin,
            ws,
            skopeo_sources,
        }
    }

    pub(super) fn root(&self) -> &Path {
        &self.ws.root
    }

    pub(super) fn skopeo_sources(&self) -> &[(String, String)] {
        &self.skopeo_sources
    }

    pub(super) fn images(&self) -> usize {
        self.ws.targets.len()
    }

    /// Bytes of the distinct base layers (what the origin must serve at
    /// least once to a destination that lacks them).
    pub(super) fn base_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.ws
            .bases
            .iter()
            .flat_map(|b| &b.layers)
            .filter(|l| seen.insert(l.digest.clone()))
            .map(|l| l.bytes.len() as u64)
            .sum()
    }

    /// One round against `b`'s fresh registries: (kvpush, skopeo), each
    /// with the bytes the origin served it.
    pub(super) fn round(&self, b: &Bench) -> (Measure, Measure) {
        self.origin.clear_access_log();
        let mut k = b.kvpush(&self.ws.root, "rules-img");
        k.fetched = self.origin_bytes_served();
        self.origin.clear_access_log();
        let mut s = b.skopeo(&self.skopeo_sources, "rules-img");
        s.fetched = self.origin_bytes_served();
        (k, s)
    }

    /// Body bytes of the blob `GET`s in the origin's access log so far
    /// (combined log format: `"GET /v2/.../blobs/sha256:... HTTP/1.1" 200 SIZE`).
    fn origin_bytes_served(&self) -> u64 {
        // The registry writes its log line after the response.
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.origin
            .access_log()
            .lines()
            .filter_map(|line| {
                let request = &line[line.find("] \"GET ")? + 3..];
                let (uri, after) = request.split_once('"')?;
                if !uri.contains("/blobs/") {
                    return None;
                }
                let mut fields = after.split_whitespace();
                let _status = fields.next()?;
                fields.next()?.parse::<u64>().ok()
            })
            .sum()
    }
}
