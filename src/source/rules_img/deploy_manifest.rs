//! rules_img's deploy manifest (`bazel-bin/<pkg>/push-X.json`): what
//! `img deploy` would do, read leniently (unknown fields are ignored, so
//! later rules_img versions keep working) and checked for what kvpush
//! cannot honour (other push strategies, `load`, signing, referrers), each
//! refused with what to do instead. Knows nothing of runfiles or registries.

use serde::Deserialize;

use crate::blob::is_sha256_digest;

/// The whole file.
#[derive(Debug, Deserialize)]
pub struct DeployManifest {
    #[serde(default)]
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub settings: Settings,
}

#[derive(Debug, Default, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub push_strategy: String,
    #[serde(default)]
    pub forbid_layer_push: bool,
}

/// One operation: `push`, `registry_tag` (or `load`, refused).
#[derive(Debug, Deserialize)]
pub struct Operation {
    pub command: String,
    #[serde(default)]
    pub root_kind: String,
    pub root: Descriptor,
    #[serde(default)]
    pub manifests: Vec<ManifestInfo>,
    #[serde(default)]
    pub cross_mount_hint: Option<CrossMountHint>,
    /// Where the base image was pulled from (v0.3.0-v0.3.15 name the
    /// origin of every missing layer this way).
    #[serde(default)]
    pub original_registries: Vec<String>,
    #[serde(default)]
    pub original_repository: String,
    #[serde(default)]
    pub original_tag: String,
    #[serde(default)]
    pub original_digest: String,
    #[serde(default)]
    pub registry: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub sign: Option<serde_json::Value>,
    #[serde(default)]
    pub referrer: bool,
}

/// A descriptor as rules_img writes it; layers may carry their `sources`
/// (v0.3.16+) and a `compact_stream` (a layer never materialised).
#[derive(Clone, Debug, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub sources: Vec<LayerSource>,
    #[serde(default)]
    pub compact_stream: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LayerSource {
    pub registry: String,
    pub repository: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CrossMountHint {
    #[serde(default)]
    pub registry: Option<String>,
    pub repository: String,
}

/// One image of an operation.
#[derive(Debug, Deserialize)]
pub struct ManifestInfo {
    pub descriptor: Descriptor,
    pub config: Descriptor,
    #[serde(default)]
    pub layer_blobs: Vec<Descriptor>,
    /// Layers absent from the runfiles, as bare hex (v0.3.0-v0.3.15).
    #[serde(default)]
    pub missing_blobs: Vec<String>,
}

impl ManifestInfo {
    /// Whether `missing_blobs` lists `digest` (`sha256:<hex>`); accepts the
    /// prefixed form too.
    pub fn lists_missing(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.missing_blobs
            .iter()
            .any(|m| m.strip_prefix("sha256:").unwrap_or(m) == hex)
    }
}

/// The fix for a deploy manifest kvpush cannot push.
fn rebuild(push: &str) -> String {
    format!("bazel build --@rules_img//img/settings:push_strategy=eager //:{push}")
}

impl DeployManifest {
    /// Parse and check the deploy manifest of target `push` read from `file`.
    pub fn parse(bytes: &[u8], push: &str, file: &str) -> Result<DeployManifest, String> {
        let manifest: DeployManifest = serde_json::from_slice(bytes).map_err(|e| {
            format!("{push}: cannot read the rules_img deploy manifest {file}: {e}; rebuild it with `bazel build //:{push}`")
        })?;
        manifest.check(push, file)?;
        Ok(manifest)
    }

    fn check(&self, push: &str, file: &str) -> Result<(), String> {
        let strategy = self.settings.push_strategy.as_str();
        if !strategy.is_empty() && strategy != "eager" {
            return Err(format!(
                "{push}: {file} was built with push_strategy {strategy:?}, whose blobs are not all in the runfiles; kvpush pushes eager builds: run `{}`",
                rebuild(push)
            ));
        }
        if self.settings.forbid_layer_push {
            return Err(format!(
                "{push}: {file} forbids uploading layers (forbid_layer_push), which kvpush cannot promise; build without it"
            ));
        }
        if !self.operations.iter().any(|o| o.command == "push") {
            return Err(format!(
                "{push}: {file} has no push operation; is {push} an image_push target?"
            ));
        }
        for (i, op) in self.operations.iter().enumerate() {
            let what = format!("{push}: operation {i} of {file}");
            match op.command.as_str() {
                "push" | "registry_tag" => {}
                "load" => {
                    return Err(format!(
                        "{what} loads into a container daemon; kvpush pushes to registries only: use `bazel run` of an image_load target for that"
                    ))
                }
                other => {
                    return Err(format!(
                        "{what} is a {other:?} operation, which kvpush does not know; push this target with `bazel run //:{push}`"
                    ))
                }
            }
            if op.sign.is_some() {
                return Err(format!(
                    "{what} asks for the image to be signed, which kvpush cannot do; push this target with `bazel run //:{push}`, or drop the signing from it"
                ));
            }
            if op.referrer {
                return Err(format!(
                    "{what} pushes a referrer artifact, which kvpush does not push; push this target with `bazel run //:{push}`"
                ));
            }
            if !matches!(op.root_kind.as_str(), "manifest" | "index") {
                return Err(format!(
                    "{what} has root_kind {:?}; expected \"manifest\" or \"index\"",
                    op.root_kind
                ));
            }
            let descriptors = std::iter::once(&op.root).chain(
                op.manifests
                    .iter()
                    .flat_map(|m| [&m.descriptor, &m.config].into_iter().chain(&m.layer_blobs)),
            );
            for d in descriptors {
                if !is_sha256_digest(&d.digest) {
                    return Err(format!(
                        "{what} names digest {:?}; kvpush reads sha256 digests only",
                        d.digest
                    ));
                }
            }
            if op.command == "push" && op.manifests.is_empty() {
                return Err(format!("{what} lists no manifest"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}"#;

    fn op(command: &str, extra: &str) -> String {
        format!(
            r#"{{"command":"{command}","root_kind":"manifest","root":{D},"manifests":[{{"descriptor":{D},"config":{D},"layer_blobs":[{D}],"missing_blobs":["00"]}}],"registry":"quay.io","repository":"kubevirt/x","new_field":[1,2]{extra}}}"#
        )
    }

    fn file(ops: &[String], settings: &str) -> String {
        format!(
            r#"{{"operations":[{}],"settings":{{{settings}}}}}"#,
            ops.join(",")
        )
    }

    fn manifest(op_extra: &str, settings: &str) -> String {
        file(&[op("push", op_extra)], settings)
    }

    #[test]
    fn eager_push_is_read_and_unknown_fields_ignored() {
        let m = DeployManifest::parse(
            manifest("", r#""push_strategy":"eager","blob_repository":"x""#).as_bytes(),
            "push-x",
            "push-x.json",
        )
        .unwrap();
        assert_eq!(m.operations[0].repository, "kubevirt/x");
        assert!(m.operations[0].manifests[0].lists_missing("sha256:00"));
    }

    #[test]
    fn what_kvpush_cannot_honour_is_refused_with_the_fix() {
        let refuse = |extra: &str, settings: &str| {
            DeployManifest::parse(
                manifest(extra, settings).as_bytes(),
                "push-x",
                "push-x.json",
            )
            .unwrap_err()
        };
        let err = refuse("", r#""push_strategy":"lazy""#);
        assert!(
            err.contains("push-x")
                && err.contains("--@rules_img//img/settings:push_strategy=eager"),
            "{err}"
        );
        assert!(refuse("", r#""push_strategy":"cas_registry""#).contains("cas_registry"));
        assert!(refuse(r#","sign":{}"#, "").contains("signed"));
        assert!(refuse(r#","referrer":true"#, "").contains("referrer"));
        assert!(refuse("", r#""forbid_layer_push":true"#).contains("forbid_layer_push"));
        let only_load = file(&[op("load", "")], "");
        let err = DeployManifest::parse(only_load.as_bytes(), "push-x", "f").unwrap_err();
        assert!(err.contains("no push operation"), "{err}");
        let load_too = file(&[op("load", ""), op("push", "")], "");
        let err = DeployManifest::parse(load_too.as_bytes(), "push-x", "f").unwrap_err();
        assert!(
            err.contains("operation 0 of f loads into a container daemon"),
            "{err}"
        );
        let bad = manifest("", "").replace("sha256:0000", "sha512:0000");
        assert!(DeployManifest::parse(bad.as_bytes(), "push-x", "f")
            .unwrap_err()
            .contains("sha256 digests only"));
    }
}
