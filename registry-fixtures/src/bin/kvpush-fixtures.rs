//! `kvpush-fixtures gen-workspace DIR [--scale SIZE] [--seed N] [--compressed]
//!  [--merged-bundle] [--dedup-layers] [--image-prefix P] [--extra-image NAME]...
//!  [--push-parts]`
//! `kvpush-fixtures fuzz-seeds DIR`
//! `kvpush-fixtures gen-rules-img DIR [--scale SIZE] [--seed N] [--origin HOST:PORT]
//!  [--arch ARCH] [--base-layouts DIR]`

use kvpush_fixtures::{generate_workspace, parse_size, WorkspaceSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage:
  kvpush-fixtures gen-workspace DIR [options]
      --scale SIZE        total size of all tarballs, e.g. 64MiB, 1GiB (default 8MiB)
      --seed N            content seed (default 1)
      --compressed        experimental_tarball_format = \"compressed\" (gzip layers)
      --merged-bundle     docker-save style bundle (adds an alias key merged into one entry)
      --dedup-layers      store layers shared inside a tarball once (rules_docker does not)
      --image-prefix P    $(image_prefix) at build time (default empty)
      --container-prefix P  $(container_prefix) at build time (default index.docker.io/kubevirt)
      --tag T             $(container_tag) at build time (default latest)
      --extra-image NAME  extra bundle entry (repeatable)
      --change-layer KEY  vary one layer's content (an image's own layer is keyed by its NAME)
      --arch ARCH         architecture written in the image configs (default amd64)
      --push-parts        also write rules_docker push-target parts (bazel build //:push-*)
  kvpush-fixtures gen-rules-img DIR [options]
      a rules_img workspace: 12 image_push targets, deploy manifests and runfiles
      in the three layouts; base layers are shallow (to be served by --origin)
      --scale SIZE        total size of all layers (default 4MiB)
      --seed N            content seed (default 1)
      --origin HOST:PORT  registry the base images come from (default 127.0.0.1:5001)
      --arch ARCH         architecture in the configs (default amd64)
      --base-layouts DIR  also write the base images as OCI layouts DIR/<n>, and
                          print `skopeo copy` lines that seed the origin with them
  kvpush-fixtures fuzz-seeds DIR
      writes the seed corpus of the fuzz targets to DIR/tarball and DIR/manifest

Registries: see start-registry.sh / stop-registry.sh next to this crate.";

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut it = args.into_iter();
    match it.next().as_deref() {
        Some("gen-workspace") => {}
        Some("fuzz-seeds") => {
            let dir = it.next().ok_or_else(|| format!("DIR missing\n{USAGE}"))?;
            return kvpush_fixtures::fuzzcorpus::write_seeds(std::path::Path::new(&dir))
                .map_err(|e| format!("writing seeds to {dir}: {e}"));
        }
        Some("gen-rules-img") => return gen_rules_img(it.collect()),
        Some("-h") | Some("--help") | None => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    let mut dir: Option<PathBuf> = None;
    let mut spec = WorkspaceSpec::default();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--scale" => {
                let v = value("--scale")?;
                spec.scale_bytes = parse_size(&v).ok_or_else(|| format!("bad size {v:?}"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                spec.seed = v.parse().map_err(|_| format!("bad seed {v:?}"))?;
            }
            "--compressed" => spec.compressed_layers = true,
            "--merged-bundle" => spec.merged_bundle = true,
            "--dedup-layers" => spec.dedup_layers = true,
            "--image-prefix" => spec.build_image_prefix = value("--image-prefix")?,
            "--container-prefix" => spec.build_container_prefix = value("--container-prefix")?,
            "--tag" => spec.build_container_tag = value("--tag")?,
            "--extra-image" => spec.extra_bundle_images.push(value("--extra-image")?),
            "--change-layer" => spec.changed_layers.push(value("--change-layer")?),
            "--arch" => spec.arch = value("--arch")?,
            "--push-parts" => spec.push_parts = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => {
                if dir.replace(PathBuf::from(s)).is_some() {
                    return Err(format!("more than one DIR given\n{USAGE}"));
                }
            }
        }
    }
    let dir = dir.ok_or_else(|| format!("DIR missing\n{USAGE}"))?;
    let t0 = Instant::now();
    let ws = generate_workspace(&dir, &spec)
        .map_err(|e| format!("generating {}: {e}", dir.display()))?;
    println!(
        "workspace {} (seed {}, {})",
        ws.root.display(),
        spec.seed,
        if spec.compressed_layers {
            "compressed layers"
        } else {
            "legacy layers"
        }
    );
    for t in &ws.tarballs {
        let size = std::fs::metadata(t).map(|m| m.len()).unwrap_or(0);
        let n = ws.images.iter().filter(|i| i.tarball == *t).count();
        let rel = t.strip_prefix(&ws.root).unwrap_or(t);
        println!(
            "  {:>10}  {:>2} image(s)  {}",
            human(size),
            n,
            rel.display()
        );
    }
    println!(
        "{} images, {} tarballs, {} total, generated in {:.1?}",
        ws.images.len(),
        ws.tarballs.len(),
        human(ws.total_bytes),
        t0.elapsed()
    );
    Ok(())
}

fn gen_rules_img(args: Vec<String>) -> Result<(), String> {
    let mut it = args.into_iter();
    let mut dir: Option<PathBuf> = None;
    let mut layouts: Option<PathBuf> = None;
    let mut spec = kvpush_fixtures::RulesImgSpec::default();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--scale" => {
                let v = value("--scale")?;
                spec.scale_bytes = parse_size(&v).ok_or_else(|| format!("bad size {v:?}"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                spec.seed = v.parse().map_err(|_| format!("bad seed {v:?}"))?;
            }
            "--origin" => spec.origin_registry = value("--origin")?,
            "--arch" => spec.arch = value("--arch")?,
            "--base-layouts" => layouts = Some(PathBuf::from(value("--base-layouts")?)),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => {
                if dir.replace(PathBuf::from(s)).is_some() {
                    return Err(format!("more than one DIR given\n{USAGE}"));
                }
            }
        }
    }
    let dir = dir.ok_or_else(|| format!("DIR missing\n{USAGE}"))?;
    let ws = kvpush_fixtures::generate_rules_img_workspace(&dir, &spec)
        .map_err(|e| format!("generating {}: {e}", dir.display()))?;
    for t in &ws.targets {
        println!(
            "  push-{:<26} {:?}{} {}",
            t.name,
            t.layout,
            if t.manifest_runfiles {
                " (runfiles manifest)"
            } else {
                ""
            },
            t.root_digest
        );
    }
    println!(
        "{} rules_img targets in {}",
        ws.targets.len(),
        ws.root.display()
    );
    if let Some(layouts) = layouts {
        let written = kvpush_fixtures::write_base_layouts(&layouts, &ws.bases)
            .map_err(|e| format!("writing {}: {e}", layouts.display()))?;
        for (layout, repository, tag) in written {
            println!(
                "skopeo copy --dest-tls-verify=false oci:{}:{tag} docker://{}/{repository}:{tag}",
                layout.display(),
                spec.origin_registry
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvpush-fixtures: {e}");
            ExitCode::FAILURE
        }
    }
}
