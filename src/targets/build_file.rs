//! Push targets read from the workspace's root BUILD.bazel with a real
//! Starlark parser (starlark_syntax), so that a bundle that gains or loses
//! an image is followed without a kvpush change.
//!
//! What is read, at the top level of the file, in file order:
//! - `container_push(name, image, repository, format, ...)`: one image;
//! - `docker_push(name, bundle)` (or `container_push` loaded from
//!   rules_docker's `contrib/push-all.bzl`): a bundle's images;
//! - `container_bundle(name, images = {key: label})`: the bundle's images,
//!   named by the last path component of each key's repository with
//!   `$(image_prefix)` removed, in the order written;
//! - `image_push(name, image, ...)` loaded from rules_img's
//!   `@rules_img//img:push.bzl`: one image named by the target without
//!   `push-`. Its `registry`, `repository` and `tag`/`tag_list` are not
//!   read: the deploy manifest Bazel writes holds them, stamped, and kvpush
//!   overrides them at run time as KubeVirt's push script does;
//! - `oci_push(name, image, repository, remote_tags)` loaded from
//!   `@rules_oci//oci:defs.bzl`: one image, the OCI layout `image` names,
//!   named like `image_push` by the target; `repository` and `remote_tags`
//!   are overridden at run time as KubeVirt's script did with `--repository`
//!   and `--tag`.
//!
//! A file may mix the rule sets (a branch mid-migration); each target
//! records its [`Kind`]. A name given to two targets is an error, as in
//! Bazel.
//!
//! Values may be string literals, `+` concatenations, top-level variables
//! and `select()` (its `//conditions:default` branch). Nothing is executed;
//! anything else in the file is ignored unless a push target needs it.

use std::collections::HashMap;
use std::path::Path;

use starlark_syntax::codemap::Span;
use starlark_syntax::syntax::ast::{
    ArgumentP, AssignTargetP, AstExpr, AstLiteral, AstStmt, BinOp, ExprP, StmtP,
};
use starlark_syntax::syntax::{AstModule, Dialect};

use super::{BundleImage, Kind, Target};

/// A value kvpush can compute from the file without running it.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    None,
    List(Vec<Value>),
    /// Keys and values in the order written.
    Dict(Vec<(Value, Value)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Bool(_) => "a bool",
            Value::None => "None",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
        }
    }
}

/// One top-level rule call, with its keyword arguments.
struct Call<'a> {
    /// The rule as rules_docker names it (through `load` aliases).
    rule: String,
    /// The `.bzl` file it was loaded from, if any.
    module: Option<String>,
    kwargs: Vec<(&'a str, &'a AstExpr)>,
    span: Span,
}

struct File<'a> {
    path: &'a Path,
    module: &'a AstModule,
    globals: HashMap<&'a str, &'a AstExpr>,
}

impl File<'_> {
    /// `path:line:column` of a span (1-based, as editors count).
    fn at(&self, span: Span) -> String {
        let pos = self.module.file_span(span).resolve_span().begin;
        format!(
            "{}:{}:{}",
            self.path.display(),
            pos.line + 1,
            pos.column + 1
        )
    }

    fn eval(&self, expr: &AstExpr, depth: usize) -> Result<Value, String> {
        let unsupported = |what: &str| {
            format!(
                "{}: kvpush cannot evaluate {what} here; it understands string literals, +, lists, dicts, select() and top-level variables",
                self.at(expr.span)
            )
        };
        if depth > 32 {
            return Err(unsupported("so deep an expression"));
        }
        Ok(match &expr.node {
            ExprP::Literal(AstLiteral::String(s)) => Value::Str(s.node.clone()),
            ExprP::Literal(_) => return Err(unsupported("a number")),
            ExprP::List(items) | ExprP::Tuple(items) => Value::List(
                items
                    .iter()
                    .map(|i| self.eval(i, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            ExprP::Dict(pairs) => Value::Dict(
                pairs
                    .iter()
                    .map(|(k, v)| Ok((self.eval(k, depth + 1)?, self.eval(v, depth + 1)?)))
                    .collect::<Result<_, String>>()?,
            ),
            ExprP::Op(l, BinOp::Add, r) => {
                match (self.eval(l, depth + 1)?, self.eval(r, depth + 1)?) {
                    (Value::Str(a), Value::Str(b)) => Value::Str(a + &b),
                    (Value::List(mut a), Value::List(b)) => {
                        a.extend(b);
                        Value::List(a)
                    }
                    (a, b) => {
                        return Err(unsupported(&format!("{} + {}", a.kind(), b.kind())));
                    }
                }
            }
            ExprP::Identifier(id) => match id.node.ident.as_str() {
                "True" => Value::Bool(true),
                "False" => Value::Bool(false),
                "None" => Value::None,
                name => match self.globals.get(name) {
                    Some(value) => self.eval(value, depth + 1)?,
                    None => {
                        return Err(unsupported(&format!(
                            "`{name}`, which is not a top-level variable of this file"
                        )))
                    }
                },
            },
            ExprP::Call(callee, args) if is_ident(callee, "select") => {
                let [arg] = &args.args[..] else {
                    return Err(unsupported("a select() without exactly one argument"));
                };
                let Value::Dict(branches) = self.eval(arg.node.expr(), depth + 1)? else {
                    return Err(unsupported("a select() of something else than a dict"));
                };
                let default = Value::Str("//conditions:default".into());
                match branches.into_iter().find(|(k, _)| *k == default) {
                    Some((_, v)) => v,
                    None => return Err(unsupported("a select() without //conditions:default")),
                }
            }
            ExprP::Call(..) => return Err(unsupported("a function call")),
            _ => return Err(unsupported("this expression")),
        })
    }

    fn string(&self, call: &Call, attr: &str) -> Result<Option<String>, String> {
        let Some((_, expr)) = call.kwargs.iter().find(|(n, _)| *n == attr) else {
            return Ok(None);
        };
        match self.eval(expr, 0)? {
            Value::Str(s) => Ok(Some(s)),
            other => Err(format!(
                "{}: `{attr}` is {}, expected a string",
                self.at(expr.span),
                other.kind()
            )),
        }
    }

    fn required(&self, call: &Call, attr: &str) -> Result<String, String> {
        self.string(call, attr)?.ok_or_else(|| {
            format!(
                "{}: {}() has no `{attr}`; Bazel would refuse it too",
                self.at(call.span),
                call.rule
            )
        })
    }
}

fn is_ident(expr: &AstExpr, name: &str) -> bool {
    matches!(&expr.node, ExprP::Identifier(id) if id.node.ident == name)
}

/// Top-level statements, flattened.
fn statements(stmt: &AstStmt) -> Vec<&AstStmt> {
    match &stmt.node {
        StmtP::Statements(list) => list.iter().flat_map(statements).collect(),
        _ => vec![stmt],
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `//pkg:name` → `(pkg, name)`; `:name` and `name` are in the root package.
pub(super) fn split_label(label: &str) -> (String, String) {
    let (repo, rest) = match label.strip_prefix('@') {
        Some(r) => match r.split_once("//") {
            Some((repo, rest)) => (Some(repo), rest),
            None => (Some(r), ""),
        },
        None => (None, label.strip_prefix("//").unwrap_or(label)),
    };
    let (pkg, name) = match rest.split_once(':') {
        Some((pkg, name)) => (pkg.to_string(), name.to_string()),
        None if label.starts_with("//") || repo.is_some() => (
            rest.to_string(),
            rest.rsplit('/').next().unwrap_or(rest).to_string(),
        ),
        None => (String::new(), rest.to_string()),
    };
    let pkg = match repo.filter(|r| !r.is_empty()) {
        Some(repo) if pkg.is_empty() => format!("external/{repo}"),
        Some(repo) => format!("external/{repo}/{pkg}"),
        None => pkg,
    };
    (pkg, name)
}

/// The canonical `//pkg:name` of a label and its `.tar` under bazel-bin.
fn label_and_tarball(label: &str) -> (String, String) {
    let (pkg, name) = split_label(label);
    let canonical = if label.starts_with('@') {
        label.to_string()
    } else {
        format!("//{pkg}:{name}")
    };
    let tarball = if pkg.is_empty() {
        format!("{name}.tar")
    } else {
        format!("{pkg}/{name}.tar")
    };
    (canonical, tarball)
}

/// The image name a repository template stands for:
/// `$(container_prefix)/$(image_prefix)virt-api:$(container_tag)` → `virt-api`.
fn image_name(template: &str) -> Option<String> {
    let last = template.rsplit('/').next().unwrap_or(template);
    let repo = last.split(':').next().unwrap_or(last);
    let name = repo.replace("$(image_prefix)", "");
    (!name.is_empty() && !name.contains("$(") && !name.contains('{')).then_some(name)
}

const PUSH_RULES: [&str; 2] = ["container_push", "docker_push"];

/// rules_oci's push rule: `oci_push`, loaded from `@rules_oci//oci:defs.bzl`
/// (or not loaded at all, as in a macro-free test file).
fn is_oci_push(call: &Call) -> bool {
    call.rule == "oci_push"
        && call.module.as_deref().is_none_or(|m| {
            m.starts_with("@rules_oci")
                || m.ends_with("oci:defs.bzl")
                || m.ends_with("oci:push.bzl")
        })
}

/// rules_img's push rule: `image_push`, loaded from `@rules_img//img:push.bzl`
/// (or not loaded at all, as in a macro-free test file).
fn is_image_push(call: &Call) -> bool {
    call.rule == "image_push"
        && call
            .module
            .as_deref()
            .is_none_or(|m| m.ends_with("img:push.bzl") || m.starts_with("@rules_img"))
}

/// Parse `text` (the content of `path`) and return its push targets in file
/// order; an empty list when it has none.
pub fn push_targets(path: &Path, text: &str) -> Result<Vec<Target>, String> {
    let module = AstModule::parse(
        &path.display().to_string(),
        text.to_string(),
        &Dialect::Standard,
    )
    .map_err(|e| {
        let at = match e.span() {
            Some(span) => {
                let pos = span.resolve_span().begin;
                format!("line {}, column {}", pos.line + 1, pos.column + 1)
            }
            None => "an unknown position".to_string(),
        };
        format!(
            "cannot parse {} at {at}: {}; kvpush reads the push targets from it: fix the file (bazel would fail on it too) or run from another --workspace",
            path.display(),
            e.without_diagnostic()
        )
    })?;
    let mut loads: HashMap<String, (String, String)> = HashMap::new();
    let mut globals = HashMap::new();
    let mut calls = Vec::new();
    for stmt in statements(module.statement()) {
        match &stmt.node {
            StmtP::Load(load) => {
                for arg in &load.args {
                    loads.insert(
                        arg.local.node.ident.clone(),
                        (load.module.node.clone(), arg.their.node.clone()),
                    );
                }
            }
            StmtP::Assign(assign) => {
                if let AssignTargetP::Identifier(id) = &assign.lhs.node {
                    globals.insert(id.node.ident.as_str(), &assign.rhs);
                }
            }
            StmtP::Expression(expr) => {
                if let ExprP::Call(callee, args) = &expr.node {
                    if let ExprP::Identifier(id) = &callee.node {
                        let local = id.node.ident.as_str();
                        let (module, rule) = match loads.get(local) {
                            Some((m, their)) => (Some(m.clone()), their.clone()),
                            None => (None, local.to_string()),
                        };
                        let kwargs = args
                            .args
                            .iter()
                            .filter_map(|a| match &a.node {
                                ArgumentP::Named(n, v) => Some((n.node.as_str(), v)),
                                _ => None,
                            })
                            .collect();
                        calls.push(Call {
                            rule,
                            module,
                            kwargs,
                            span: expr.span,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    let file = File {
        path,
        module: &module,
        globals,
    };

    // container_bundle name -> its images, in the order written.
    let mut bundles: HashMap<String, Vec<BundleImage>> = HashMap::new();
    for call in calls.iter().filter(|c| c.rule == "container_bundle") {
        let name = file.required(call, "name")?;
        let Some((_, expr)) = call.kwargs.iter().find(|(n, _)| *n == "images") else {
            continue;
        };
        let Value::Dict(images) = file.eval(expr, 0)? else {
            return Err(format!(
                "{}: `images` of container_bundle {name:?} is not a dict",
                file.at(expr.span)
            ));
        };
        let mut names: Vec<BundleImage> = Vec::new();
        for (key, value) in images {
            let Value::Str(key) = key else {
                return Err(format!(
                    "{}: a key of `images` of {name:?} is {}, expected a string",
                    file.at(expr.span),
                    key.kind()
                ));
            };
            let image = image_name(&key).ok_or_else(|| {
                format!(
                    "{}: cannot name the image of bundle key {key:?}: expected $(container_prefix)/$(image_prefix)NAME:$(container_tag)",
                    file.at(expr.span)
                )
            })?;
            // The label locates an OCI layout of the image; a value kvpush
            // cannot read as a label only loses that.
            let label = match value {
                Value::Str(label) => leak(label_and_tarball(&label).0),
                _ => "",
            };
            if !names.iter().any(|i| i.name == image) {
                names.push(BundleImage {
                    name: leak(image),
                    label,
                });
            }
        }
        bundles.insert(name, names);
    }

    let mut targets = Vec::new();
    let mut seen: HashMap<String, Span> = HashMap::new();
    for call in calls
        .iter()
        .filter(|c| PUSH_RULES.contains(&c.rule.as_str()) || is_image_push(c) || is_oci_push(c))
    {
        let push = file.required(call, "name")?;
        if let Some(first) = seen.insert(push.clone(), call.span) {
            return Err(format!(
                "{}: a second target named {push:?} (the first is at {}); Bazel refuses the file too: rename or remove one",
                file.at(call.span),
                file.at(first)
            ));
        }
        if is_image_push(call) {
            targets.push(named_by_target(&file, call, push, Kind::RulesImg)?);
            continue;
        }
        if is_oci_push(call) {
            targets.push(named_by_target(&file, call, push, Kind::RulesOci)?);
            continue;
        }
        let from_push_all = call
            .module
            .as_deref()
            .is_some_and(|m| m.ends_with("push-all.bzl"));
        let format = match call.rule.as_str() {
            "docker_push" => Some("Docker".to_string()),
            _ => file.string(call, "format")?,
        };
        if format.as_deref().is_some_and(|f| f != "Docker") {
            return Err(format!(
                "{}: {push} pushes in format {:?}; kvpush pushes Docker schema 2 only, as KubeVirt's targets do",
                file.at(call.span),
                format.unwrap_or_default()
            ));
        }
        let name = leak(push.strip_prefix("push-").unwrap_or(&push).to_string());
        if let Some(bundle) = file.string(call, "bundle")? {
            let (label, tarball) = label_and_tarball(&bundle);
            let (pkg, bundle_name) = split_label(&bundle);
            let images = if pkg.is_empty() {
                bundles.get(&bundle_name).cloned().unwrap_or_default()
            } else {
                Vec::new()
            };
            targets.push(Target {
                name,
                push: leak(push),
                tarball: leak(tarball),
                label: leak(label),
                bundle: true,
                image: "",
                images: Box::leak(images.into_boxed_slice()),
                kind: Kind::RulesDocker,
            });
        } else if from_push_all {
            return Err(format!(
                "{}: {push} has no `bundle`; Bazel would refuse it too",
                file.at(call.span)
            ));
        } else {
            let image_label = file.required(call, "image")?;
            let repository = file.required(call, "repository")?;
            let image = image_name(&repository).ok_or_else(|| {
                format!(
                    "{}: cannot name the image of {push} from repository = {repository:?}: expected $(image_prefix)NAME",
                    file.at(call.span)
                )
            })?;
            let (label, tarball) = label_and_tarball(image_label.trim_end_matches(".tar"));
            targets.push(Target {
                name,
                push: leak(push),
                tarball: leak(tarball),
                label: leak(label),
                bundle: false,
                image: leak(image),
                images: &[],
                kind: Kind::RulesDocker,
            });
        }
    }
    Ok(targets)
}

/// An `image_push` or `oci_push`: the image is named by the target
/// (`push-virt-api` -> `virt-api`), as KubeVirt's `--repository
/// ${image_prefix}X` override does.
fn named_by_target(file: &File, call: &Call, push: String, kind: Kind) -> Result<Target, String> {
    let name = push.strip_prefix("push-").unwrap_or(&push).to_string();
    if name.is_empty() {
        return Err(format!(
            "{}: cannot name the image of {push:?}: expected push-NAME",
            file.at(call.span)
        ));
    }
    let (label, tarball) = label_and_tarball(&file.required(call, "image")?);
    Ok(Target {
        name: leak(name.clone()),
        push: leak(push),
        tarball: leak(tarball),
        label: leak(label),
        bundle: false,
        image: leak(name),
        images: &[],
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEVIRT: &str = r#"
load("@io_bazel_rules_docker//container:container.bzl", "container_bundle", "container_push")
load("@io_bazel_rules_docker//contrib:push-all.bzl", "docker_push")

PREFIX = "$(container_prefix)/$(image_prefix)"

container_bundle(
    name = "build-other-images",
    images = {
        PREFIX + "vm-killer:$(container_tag)": "//images/vm-killer:vm-killer-image",
        "$(container_prefix)/$(image_prefix)alpine-ext-kernel-boot-demo:$(container_tag)": "//containerimages:alpine-ext-kernel-boot-demo-container",
    },
)

docker_push(
    name = "push-other-images",
    bundle = ":build-other-images",
)

container_push(
    name = "push-virt-api",
    format = "Docker",
    image = select({
        "@io_bazel_rules_go//go/platform:linux_arm64": "//cmd/virt-api:virt-api-image-arm",
        "//conditions:default": "//cmd/virt-api:virt-api-image",
    }),
    registry = "$(container_prefix)",
    repository = "$(image_prefix)" + "virt-api",
    tag = "$(container_tag)",
)

container_push(
    name = "push-conformance",
    testonly = True,
    format = "Docker",
    image = "//tests:conformance_image",
    registry = "$(container_prefix)",
    repository = "$(image_prefix)conformance",
    tag = "$(container_tag)",
)

genrule(name = "unrelated", cmd = some_function(1, 2))
"#;

    #[test]
    fn kubevirt_style_targets_in_file_order() {
        let t = push_targets(Path::new("/ws/BUILD.bazel"), KUBEVIRT).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].name, t[0].push, t[0].bundle, t[0].label, t[0].tarball),
            (
                "other-images",
                "push-other-images",
                true,
                "//:build-other-images",
                "build-other-images.tar"
            )
        );
        assert_eq!(
            t[0].image_names(),
            ["vm-killer", "alpine-ext-kernel-boot-demo"]
        );
        assert_eq!(
            t[0].image_label("alpine-ext-kernel-boot-demo"),
            Some("//containerimages:alpine-ext-kernel-boot-demo-container")
        );
        assert_eq!(
            (t[1].name, t[1].image, t[1].label, t[1].tarball),
            (
                "virt-api",
                "virt-api",
                "//cmd/virt-api:virt-api-image",
                "cmd/virt-api/virt-api-image.tar"
            )
        );
        assert_eq!(t[2].tarball, "tests/conformance_image.tar");
    }

    const RULES_IMG: &str = r#"
load("@rules_img//img:push.bzl", "image_push")
load("@io_bazel_rules_docker//container:container.bzl", "container_push")

image_push(
    name = "push-virt-api",
    image = "//cmd/virt-api:virt-api-image",
    registry = "quay.io",
    repository = "kubevirt/virt-api",
)

container_push(
    name = "push-virt-handler",
    format = "Docker",
    image = "//cmd/virt-handler:virt-handler-image",
    registry = "$(container_prefix)",
    repository = "$(image_prefix)virt-handler",
    tag = "$(container_tag)",
)

image_push(
    name = "push-conformance",
    testonly = True,
    image = "//tests:conformance_image",
    registry = "quay.io",
    repository = "kubevirt/conformance",
    tag_list = ["a", "b"],
)
"#;

    #[test]
    fn image_push_targets_mix_with_rules_docker_ones() {
        let t = push_targets(Path::new("/ws/BUILD.bazel"), RULES_IMG).unwrap();
        let seen: Vec<_> = t.iter().map(|t| (t.name, t.image, t.kind)).collect();
        assert_eq!(
            seen,
            [
                ("virt-api", "virt-api", Kind::RulesImg),
                ("virt-handler", "virt-handler", Kind::RulesDocker),
                ("conformance", "conformance", Kind::RulesImg),
            ]
        );
        assert_eq!(t[0].label, "//cmd/virt-api:virt-api-image");
        assert_eq!(t[0].push, "push-virt-api");
        assert_eq!(t[0].parts_build_command(), "bazel build //:push-virt-api");
        assert_eq!(
            t[0].deploy_manifest_path(Path::new("/ws/bazel-bin")),
            Some(Path::new("/ws/bazel-bin/push-virt-api.json").to_path_buf())
        );
        assert_eq!(t[1].deploy_manifest_path(Path::new("/b")), None);
        assert_eq!(t[2].kind.rule(), "rules_img image_push");
    }

    #[test]
    fn image_push_from_another_rule_set_is_not_rules_img() {
        let text = "load(\"//my:push.bzl\", \"image_push\")\nimage_push(name = \"push-x\", image = \"//a:b\")\n";
        assert!(push_targets(Path::new("/ws/BUILD"), text)
            .unwrap()
            .is_empty());
        let text =
            "load(\"@rules_img//img:push.bzl\", \"image_push\")\nimage_push(name = \"push-x\")\n";
        let err = push_targets(Path::new("/ws/BUILD"), text).unwrap_err();
        assert!(err.contains("image_push() has no `image`"), "{err}");
    }

    const RULES_OCI: &str = r#"
load("@rules_oci//oci:defs.bzl", "oci_push")
load("@io_bazel_rules_docker//container:container.bzl", "container_push")

oci_push(
    name = "push-virt-api",
    image = "//cmd/virt-api:virt-api-image",
    repository = "quay.io/kubevirt/virt-api",
)

container_push(
    name = "push-virt-handler",
    format = "Docker",
    image = "//cmd/virt-handler:virt-handler-image",
    registry = "$(container_prefix)",
    repository = "$(image_prefix)virt-handler",
    tag = "$(container_tag)",
)

oci_push(
    name = "push-conformance",
    testonly = True,
    image = "//tests:conformance-image",
    repository = "quay.io/kubevirt/conformance",
    remote_tags = ["latest"],
)
"#;

    #[test]
    fn oci_push_targets_mix_with_rules_docker_ones() {
        let t = push_targets(Path::new("/ws/BUILD.bazel"), RULES_OCI).unwrap();
        let seen: Vec<_> = t.iter().map(|t| (t.name, t.image, t.kind)).collect();
        assert_eq!(
            seen,
            [
                ("virt-api", "virt-api", Kind::RulesOci),
                ("virt-handler", "virt-handler", Kind::RulesDocker),
                ("conformance", "conformance", Kind::RulesOci),
            ]
        );
        assert_eq!(t[0].kind.rule(), "rules_oci oci_push");
        assert_eq!(
            t[0].build_command(),
            "bazel build //cmd/virt-api:virt-api-image"
        );
        assert_eq!(
            t[2].oci_layout_paths(Path::new("/b")),
            Some((
                Path::new("/b/tests/conformance-image").to_path_buf(),
                Path::new("/b/tests/conformance-image.json.sha256").to_path_buf()
            ))
        );
        assert_eq!(t[1].oci_layout_paths(Path::new("/b")), None);
    }

    #[test]
    fn a_target_named_twice_is_an_error_naming_both() {
        let text = "load(\"@rules_oci//oci:defs.bzl\", \"oci_push\")\n\
                    oci_push(name = \"push-x\", image = \"//a:x-image\", repository = \"r/x\")\n\
                    oci_push(name = \"push-x\", image = \"//b:x-image\", repository = \"r/x\")\n";
        let err = push_targets(Path::new("/ws/BUILD.bazel"), text).unwrap_err();
        assert!(
            err.contains("/ws/BUILD.bazel:3:1: a second target named \"push-x\"")
                && err.contains("first is at /ws/BUILD.bazel:2:1"),
            "{err}"
        );
        let mixed =
            format!("{RULES_OCI}\nimage_push(name = \"push-virt-api\", image = \"//a:b\")\n");
        assert!(push_targets(Path::new("/ws/BUILD"), &mixed)
            .unwrap_err()
            .contains("a second target named \"push-virt-api\""));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let text =
            "container_push(\n    name = \"push-x\",\n    image = \"//a:b\"\n    tag = \"t\",\n)\n";
        let err = push_targets(Path::new("/ws/BUILD.bazel"), text).unwrap_err();
        assert!(
            err.contains("cannot parse /ws/BUILD.bazel at line 4, column 5"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_values_and_formats_are_explained() {
        let text = "container_push(name = \"push-x\", image = f(), repository = \"x\")\n";
        let err = push_targets(Path::new("/ws/BUILD"), text).unwrap_err();
        assert!(
            err.contains("/ws/BUILD:1:41") && err.contains("a function call"),
            "{err}"
        );
        let text = "load(\"@io_bazel_rules_docker//container:container.bzl\", oci = \"container_push\")\n\
                    oci(name = \"push-x\", format = \"OCI\", image = \"//a:b\", repository = \"x\")\n";
        let err = push_targets(Path::new("/ws/BUILD"), text).unwrap_err();
        assert!(err.contains("Docker schema 2 only"), "{err}");
        assert!(
            push_targets(Path::new("/ws/BUILD"), "cc_library(name = \"x\")\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn labels_and_names() {
        assert_eq!(
            label_and_tarball(":build-other-images"),
            (
                "//:build-other-images".into(),
                "build-other-images.tar".into()
            )
        );
        assert_eq!(
            label_and_tarball("//cmd/virt-api"),
            (
                "//cmd/virt-api:virt-api".into(),
                "cmd/virt-api/virt-api.tar".into()
            )
        );
        assert_eq!(
            label_and_tarball("@base//image:img").1,
            "external/base/image/img.tar"
        );
        assert_eq!(
            image_name("$(container_prefix)/$(image_prefix)vm-killer:$(container_tag)").as_deref(),
            Some("vm-killer")
        );
        assert_eq!(image_name("$(image_prefix)$(name)"), None);
    }
}
