//! Seeds and mutations for fuzzing kvpush's tarball and deploy manifest
//! reading: the seed
//! corpus of the cargo-fuzz targets (`kvpush-fixtures fuzz-seeds DIR`) and
//! the mutator of the bounded fuzz test that runs on stable.
//!
//! Seeds are small but real: legacy and compressed layouts, a bundle whose
//! images share a layer, a gzip layer under a `layer.tar` name. Mutations
//! know a little of tar (header size fields, checksums) so that they reach
//! past the header checks, and of JSON (brackets, quotes, numbers).

use crate::docker::{
    build_archive, docker_archive_bytes, gzip, layer_tar, ArchiveFormat, ArchiveParts, TestImage,
};
use crate::prng::Rng;

fn tiny_layer(seed: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    Rng::new(seed).fill(&mut data);
    layer_tar(&[(&format!("./f{seed}"), &data)])
}

fn bytes(parts: &ArchiveParts) -> Vec<u8> {
    let mut all = parts.entries.clone();
    all.push((
        "manifest.json".into(),
        serde_json::to_vec(&parts.manifest).expect("manifest"),
    ));
    if let Some(r) = &parts.repositories {
        all.push(("repositories".into(), serde_json::to_vec(r).expect("repos")));
    }
    docker_archive_bytes(&all)
}

/// Whole tarballs: (name, bytes).
pub fn tarball_seeds() -> Vec<(String, Vec<u8>)> {
    let single = TestImage::new(
        "bazel/cmd/virt-api:virt-api-image",
        vec![tiny_layer(1, 300), tiny_layer(2, 40)],
    );
    let base = tiny_layer(3, 200);
    let bundle = [
        TestImage::new(
            "index.docker.io/kubevirt/vm-killer:latest",
            vec![base.clone(), tiny_layer(4, 100)],
        ),
        TestImage::new(
            "index.docker.io/kubevirt/winrmcli:latest",
            vec![base, tiny_layer(5, 60)],
        ),
    ];
    let mut gz_named_tar = build_archive(std::slice::from_ref(&single), ArchiveFormat::Legacy);
    let first = gz_named_tar.layer_names(0)[0].clone();
    let entry = gz_named_tar.entry_mut(&first).expect("layer entry");
    *entry = gzip(entry);
    vec![
        (
            "legacy".into(),
            bytes(&build_archive(
                std::slice::from_ref(&single),
                ArchiveFormat::Legacy,
            )),
        ),
        (
            "compressed".into(),
            bytes(&build_archive(
                std::slice::from_ref(&single),
                ArchiveFormat::Compressed,
            )),
        ),
        (
            "bundle".into(),
            bytes(&build_archive(&bundle, ArchiveFormat::Legacy)),
        ),
        ("gzip-layer-named-tar".into(), bytes(&gz_named_tar)),
    ]
}

/// `manifest.json` documents and image configs: (name, bytes).
pub fn manifest_seeds() -> Vec<(String, Vec<u8>)> {
    let image = TestImage::new(
        "index.docker.io/kubevirt/vm-killer:latest",
        vec![tiny_layer(1, 10)],
    );
    let parts = build_archive(std::slice::from_ref(&image), ArchiveFormat::Legacy);
    vec![
        (
            "manifest".into(),
            serde_json::to_vec(&parts.manifest).expect("manifest"),
        ),
        ("config".into(), image.raw_config()),
        (
            "manifest-with-sources".into(),
            br#"[{"Config":"a.json","RepoTags":null,"Layers":["x/layer.tar"],"LayerSources":{"sha256:00":{"mediaType":"m","size":1,"digest":"sha256:00"}}}]"#.to_vec(),
        ),
    ]
}

/// rules_img deploy manifests (`push-X.json`), from the generator: each
/// runfiles layout's form (`missing_blobs`, per-layer `sources`), a
/// cross-mount hint, an index target, and a `registry_tag` operation with
/// a lazy push strategy (refused): (name, bytes).
pub fn deploy_manifest_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::workspace::rules_img::{
        base_images, generate_rules_img_workspace, image_on, index_of, write_push_target,
        RulesImgLayout, RulesImgSpec,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spec = RulesImgSpec {
        scale_bytes: 24 << 10,
        ..RulesImgSpec::default()
    };
    let ws = generate_rules_img_workspace(dir.path(), &spec).expect("a rules_img workspace");
    let mut seeds: Vec<(String, Vec<u8>)> = [0, 1, 2, 9]
        .into_iter()
        .map(|i| {
            let t = &ws.targets[i];
            let bytes = std::fs::read(&t.deploy_manifest).expect("the deploy manifest");
            (format!("{:?}-{}", t.layout, t.name), bytes)
        })
        .collect();
    let bases = base_images(&spec);
    let images = vec![
        image_on(&spec, &bases[0], "multi", 1, 64),
        image_on(&spec, &bases[0], "multi-arm", 1, 64),
    ];
    let index = index_of(&images, &["amd64", "arm64"]);
    let bin = dir.path().join("index-bin");
    let t = write_push_target(
        &bin,
        &spec,
        &bases[0],
        0,
        "multi",
        RulesImgLayout::SparseSources,
        false,
        images,
        Some(index),
    )
    .expect("an index target");
    let bytes = std::fs::read(&t.deploy_manifest).expect("the deploy manifest");
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    seeds.push(("index".into(), bytes));
    let mut tag = v["operations"][0].clone();
    tag["command"] = "registry_tag".into();
    tag["root"] = tag["manifests"][0]["descriptor"].clone();
    tag["tags"] = serde_json::json!(["v1-amd64"]);
    v["operations"]
        .as_array_mut()
        .expect("operations")
        .push(tag);
    v["settings"]["push_strategy"] = "lazy".into();
    seeds.push((
        "registry-tag-lazy".into(),
        serde_json::to_vec(&v).expect("json"),
    ));
    seeds
}

/// Recompute the checksum of the 512-byte tar header at `at`, if whole.
fn fix_checksum(data: &mut [u8], at: usize) {
    let Some(header) = data.get_mut(at..at + 512) else {
        return;
    };
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
}

const JSON_BITS: [&[u8]; 12] = [
    b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"-1", b"1e999", b"\\u0000", b"sha256:",
];

/// One to four random edits of `input`; `others` are spliced in at times.
pub fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len().max(1) as u64;
        let at = rng.below(len) as usize;
        match rng.below(10) {
            0 => {
                if let Some(b) = data.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                if let Some(b) = data.get_mut(at) {
                    *b = rng.next_u64() as u8;
                }
            }
            2 => data.truncate(at),
            3 => {
                let end = (at + rng.below(1024) as usize).min(data.len());
                data.drain(at..end);
            }
            4 => {
                let mut extra = vec![0u8; rng.below(64) as usize];
                rng.fill(&mut extra);
                let at = at.min(data.len());
                data.splice(at..at, extra);
            }
            5 => {
                // A tar size field: huge, base-256, zero, or garbage.
                let header = (at / 512) * 512;
                if data.len() >= header + 512 {
                    let field: &[u8] = match rng.below(4) {
                        0 => b"77777777777\0",
                        1 => &[
                            0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                        ],
                        2 => b"00000000000\0",
                        _ => b"0000000x123\0",
                    };
                    data[header + 124..header + 136].copy_from_slice(field);
                    fix_checksum(&mut data, header);
                }
            }
            6 => {
                // An edit inside a header that still passes its checksum.
                let header = (at / 512) * 512;
                if let Some(b) = data.get_mut(at) {
                    *b = rng.next_u64() as u8;
                }
                fix_checksum(&mut data, header);
            }
            7 => {
                let bit = JSON_BITS[rng.below(JSON_BITS.len() as u64) as usize];
                let at = at.min(data.len());
                data.splice(at..at, bit.iter().copied());
            }
            8 => {
                if let Some(other) = others.get(rng.below(others.len().max(1) as u64) as usize) {
                    let from = rng.below(other.len().max(1) as u64) as usize;
                    let take = rng.below(2048) as usize;
                    let piece = &other[from.min(other.len())..(from + take).min(other.len())];
                    let at = at.min(data.len());
                    data.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                // Repeat a 512-byte block (duplicate members, bad sizes).
                let block = (at / 512) * 512;
                if data.len() >= block + 512 {
                    let copy = data[block..block + 512].to_vec();
                    data.splice(block..block, copy);
                }
            }
        }
    }
    data
}

/// Write the seeds under `dir/<target>` (`tarball`, `manifest`,
/// `deploy_manifest`), one file each.
pub fn write_seeds(dir: &std::path::Path) -> std::io::Result<()> {
    for (target, seeds) in [
        ("tarball", tarball_seeds()),
        ("manifest", manifest_seeds()),
        ("deploy_manifest", deploy_manifest_seeds()),
    ] {
        let sub = dir.join(target);
        std::fs::create_dir_all(&sub)?;
        for (name, data) in seeds {
            std::fs::write(sub.join(format!("seed-{name}")), data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_readable_archives_and_mutations_change_them() {
        for (name, data) in tarball_seeds() {
            let mut ar = tar::Archive::new(&data[..]);
            let names: Vec<String> = ar
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            assert!(names.contains(&"manifest.json".to_string()), "{name}");
        }
        let mut rng = Rng::new(1);
        let seed = &tarball_seeds()[0].1;
        let changed = (0..100)
            .filter(|_| mutate(&mut rng, seed, &[]) != *seed)
            .count();
        assert!(changed > 80, "{changed}");
        let mut header = seed[..512].to_vec();
        fix_checksum(&mut header, 0);
        assert_eq!(header, seed[..512], "checksums are computed as tar does");
        let deploy = deploy_manifest_seeds();
        assert_eq!(deploy.len(), 6);
        for (name, data) in deploy {
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert!(v["operations"][0]["root"]["digest"].is_string(), "{name}");
        }
    }
}
