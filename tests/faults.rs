//! kvpush against a real registry behind a fault-injecting proxy
//! (`kvpush_fixtures::FaultProxy`): transient errors are retried until the
//! push lands, a registry that stays down fails cleanly within the limits,
//! and bodies the registry refuses as too large go up in chunks. Every
//! image is checked with skopeo against the registry itself.

mod common;

use std::time::Duration;

use common::{make_writable, verify_with_skopeo, Scenario};
use kvpush_fixtures::{
    build_archive, layer_tar, ArchiveFormat, Fault, FaultPlan, FaultProxy, Outcome, TestImage,
};

fn injected(proxy: &FaultProxy, want: impl Fn(&Fault) -> bool) -> usize {
    proxy
        .events()
        .iter()
        .filter(|e| matches!(&e.outcome, Outcome::Injected(f) if want(f)))
        .count()
}

#[test]
fn a_refused_streamed_upload_is_made_again_the_ordinary_way() {
    let sc = Scenario::plain();
    let proxy = sc.proxy(FaultPlan {
        rate: 1.0,
        faults: vec![Fault::Status {
            code: 500,
            retry_after: None,
        }],
        only: Some(("PATCH".into(), "/blobs/uploads/".into())),
        ..FaultPlan::default()
    });
    let run = sc.push_through(&proxy, &["all"], &["--tag", "t"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(proxy.injected() > 0, "streamed uploads were tried");
    sc.verify_all("t");
}

#[test]
fn a_flaky_registry_still_gets_every_image() {
    let sc = Scenario::plain();
    let proxy = sc.proxy(FaultPlan {
        stall_limit: Duration::from_secs(20),
        ..FaultPlan::flaky(42, 0.2)
    });
    let digests = sc.dir.path().join("digests");
    let run = sc.push_through(
        &proxy,
        &["all"],
        &[
            "--tag",
            "devel",
            "--retries",
            "10",
            "--stall-timeout",
            "2s",
            "--digests-dir",
            digests.to_str().unwrap(),
        ],
    );
    let events = proxy.events();
    eprintln!(
        "proxy: {} requests, {} faults",
        events.len(),
        proxy.injected()
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("21 images: 21 pushed"),
        "{}",
        run.stderr
    );
    for image in &sc.ws.images {
        let reference = sc.reference(&image.name, "devel");
        let digest = verify_with_skopeo(&sc.registry, &reference, image);
        if image.target != "other-images" {
            let file = digests.join(format!("push-{}.digest", image.target));
            assert_eq!(std::fs::read_to_string(&file).unwrap(), digest);
        }
    }

    // The faults really happened, of every kind, on about a fifth of the requests.
    assert!(
        proxy.injected() * 8 >= events.len(),
        "{} faults in {} requests",
        proxy.injected(),
        events.len()
    );
    for (what, n) in [
        (
            "5xx",
            injected(
                &proxy,
                |f| matches!(f, Fault::Status { code, .. } if *code >= 500),
            ),
        ),
        (
            "429 with Retry-After",
            injected(&proxy, |f| {
                matches!(
                    f,
                    Fault::Status {
                        code: 429,
                        retry_after: Some(_)
                    }
                )
            }),
        ),
        (
            "truncated answers",
            injected(&proxy, |f| *f == Fault::Truncate),
        ),
        ("stalls", injected(&proxy, |f| *f == Fault::Stall)),
    ] {
        assert!(n > 0, "no {what} injected");
    }
    for kind in [Fault::Reset, Fault::Eof] {
        assert!(injected(&proxy, |f| *f == kind) > 0, "no {kind:?} injected");
    }
}

#[test]
fn uploads_cut_off_or_stalled_mid_body_restart_from_their_post() {
    // The nightly failure: an EOF in the middle of a blob upload.
    let sc = Scenario::plain();
    let proxy = sc.proxy(FaultPlan {
        rate: 0.35,
        faults: vec![Fault::Eof, Fault::Reset, Fault::Stall],
        only: Some(("PUT".into(), "/blobs/uploads/".into())),
        stall_limit: Duration::from_secs(20),
        ..FaultPlan::default()
    });
    let run = sc.push_through(
        &proxy,
        &["virt-launcher", "other-images"],
        &["--tag", "devel", "--retries", "12", "--stall-timeout", "2s"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pushed = sc.images_of(&["virt-launcher", "other-images"]);
    for image in pushed {
        sc.verify(&image.name, "devel");
    }
    let events = proxy.events();
    let cut = |kind: Fault| {
        events
            .iter()
            .filter(|e| e.outcome == Outcome::Injected(kind) && e.body_len > 0)
            .count()
    };
    assert!(cut(Fault::Eof) > 0 && cut(Fault::Reset) > 0, "{events:#?}");
    assert!(cut(Fault::Stall) > 0, "a stalled upload was detected");
    assert!(
        run.stderr.contains("stalled; see --stall-timeout"),
        "{}",
        run.stderr
    );
    // Each cut-off upload was started again from a new session.
    let faults = proxy.injected();
    let sessions = events
        .iter()
        .filter(|e| e.method == "POST" && e.uri.ends_with("/blobs/uploads/"))
        .count();
    let blob_puts = events
        .iter()
        .filter(|e| {
            e.outcome == Outcome::Forwarded(201)
                && e.method == "PUT"
                && e.uri.contains("/blobs/uploads/")
        })
        .count();
    assert_eq!(
        sessions,
        blob_puts + faults,
        "one new POST per restarted upload"
    );
}

#[test]
fn a_registry_that_stays_down_fails_within_the_limits_and_tags_nothing() {
    let sc = Scenario::plain();
    // The probe (`GET /v2/` over plain HTTP, after HTTPS was refused) and
    // the ping get through, then every request answers 503.
    let proxy = sc.proxy(FaultPlan::down(2, None));
    let run = sc.push_through(
        &proxy,
        &["virt-api", "virt-handler"],
        &["--tag", "devel", "--retries", "3"],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("registry {} answered 503", proxy.addr()))
            && run.stderr.contains("gave up after 3 tries")
            && run.stderr.contains("the most --retries 3 allows"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("0 pushed, 0 skipped (already up to date), 2 failed")
            && run
                .stderr
                .contains("kvpush:   virt-api (push-virt-api): registry"),
        "each failure with its reason: {}",
        run.stderr
    );
    assert_eq!(max_tries(&proxy), 3, "no request tried more than --retries");
    assert!(sc.catalog().is_empty(), "nothing was tagged");

    // Retry-After (2s, honoured as is) beyond what --retry-time leaves:
    // give up early, not after 50 tries.
    proxy.set_plan(FaultPlan::down(2, Some(2)));
    proxy.clear_events();
    let run = sc.push_through(
        &proxy,
        &["virt-api"],
        &["--tag", "devel", "--retries", "50", "--retry-time", "3s"],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("the next, due in 2.0s, would start past --retry-time 3s"),
        "{}",
        run.stderr
    );
    assert!(max_tries(&proxy) <= 3, "tries: {}", max_tries(&proxy));
    assert!(sc.catalog().is_empty(), "nothing was tagged");
}

/// The most times one request (method and URI) reached the proxy.
fn max_tries(proxy: &FaultProxy) -> usize {
    let mut counts = std::collections::HashMap::new();
    for e in proxy.events() {
        *counts.entry((e.method, e.uri)).or_insert(0) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

#[test]
fn bodies_refused_as_too_large_go_up_in_chunks_no_smaller_than_the_registry_asks() {
    let sc = Scenario::plain();
    let limit = 256 << 10;
    let min_chunk = 160 << 10;
    let proxy = sc.proxy(FaultPlan {
        body_limit: Some(limit),
        chunk_min_length: Some(min_chunk),
        ..FaultPlan::default()
    });
    let run = sc.push_through(
        &proxy,
        &["other-images"],
        &["--tag", "devel", "--chunk-size", "64KiB"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    for image in sc.images_of(&["other-images"]) {
        sc.verify(&image.name, "devel");
    }
    let events = proxy.events();
    assert!(
        events.iter().any(|e| e.outcome == Outcome::TooLarge),
        "a whole blob was refused first"
    );
    let patches: Vec<u64> = events
        .iter()
        .filter(|e| e.method == "PATCH" && e.outcome == Outcome::Forwarded(202))
        .map(|e| e.body_len)
        .collect();
    assert!(patches.len() > 2, "{patches:?}");
    assert_eq!(
        patches.iter().max(),
        Some(&min_chunk),
        "chunks are OCI-Chunk-Min-Length, not the smaller --chunk-size: {patches:?}"
    );
}

#[test]
fn a_slow_upload_that_keeps_moving_is_not_taken_for_a_stall() {
    let sc = Scenario::plain();
    // virt-api becomes one incompressible 12 MiB layer.
    let mut data = vec![0u8; 12 << 20];
    kvpush_fixtures::prng::Rng::new(9).fill(&mut data);
    let image = TestImage::new(
        "bazel/cmd/virt-api:virt-api-image",
        vec![layer_tar(&[("./disk.img", &data)])],
    );
    let tarball = sc.image("virt-api").tarball.clone();
    make_writable(&tarball);
    build_archive(std::slice::from_ref(&image), ArchiveFormat::Legacy)
        .write(&tarball)
        .unwrap();
    // 3 MiB/s: the upload takes about 4s, twice the stall timeout, but
    // bytes keep moving all along.
    let proxy = sc.proxy(FaultPlan {
        bandwidth: Some(3 << 20),
        ..FaultPlan::default()
    });
    let run = sc.push_through(
        &proxy,
        &["virt-api"],
        &["--tag", "slow", "--stall-timeout", "2s"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("stalled"), "{}", run.stderr);
    // One body carried the layer: a PUT, or the PATCH that streamed it
    // while it was compressed.
    let big_bodies: Vec<_> = proxy
        .events()
        .into_iter()
        .filter(|e| (e.method == "PUT" || e.method == "PATCH") && e.body_len > 12 << 20)
        .collect();
    assert_eq!(
        big_bodies.len(),
        1,
        "uploaded once, never retried: {big_bodies:?}"
    );
    common::verify_test_image(&sc.registry, &sc.reference("virt-api", "slow"), &image);
}
