//! Concurrent execution of a [`Plan`]: all images progress at once, the
//! actual work bounded by two semaphores: compressions by the cores (and
//! `--jobs`), network operations by [`Options::requests_in_flight`].
//!
//! Sharing rules, each a map of once-cells so that concurrent images wait
//! for one another instead of repeating work; a failure is kept like a
//! success, so that no other image repeats it:
//! - a layer is prepared (hashed, compressed) once per diff_id per run;
//! - a blob is placed once per (host, repository);
//! - a blob is uploaded to its home repository (the first one in plan order
//!   that needs it, whichever image gets there first), and mounted from
//!   there into the others (falling back to an upload if the mount is
//!   refused). A fixed home means a re-run finds there what an interrupted
//!   run uploaded; a home new to the run mounts from where the digest cache
//!   says an earlier run left the blob.
//!
//! An image's blobs and layers are awaited with `join_all`, never
//! `try_join_all`: work another image may share is never dropped halfway
//! because a sibling failed. Permits are taken only around leaf work, never
//! while waiting on a cell, so waiting can never starve the workers.
//! A signal ([`Stop`]) drops everything in flight at once.
//!
//! This file starts the run ([`execute`]: clients, the order images start
//! in, results as they finish). The rest, each file importing only those
//! below it:
//! - `image`: one image's push, start to tags, in order;
//! - `placement`: blobs into repositories (homes, exists/mount/upload), and
//!   where a new kind of blob body plugs in;
//! - `origin`: blobs copied from their origin registry (rules_img's shallow
//!   base layers), streamed from a `GET` there into the upload;
//! - `manifests`: manifests, stale tags and tag PUTs;
//! - `prepare`: layers compressed, streamed, or repaired;
//! - `run`: the state every image shares; `layer`: a layer as pushed;
//! - `spool`: the run's temporary directory, and those killed runs left.

mod image;
mod layer;
mod manifests;
mod origin;
mod placement;
mod prepare;
mod run;
mod spool;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use futures::future::join_all;
use tokio::sync::Semaphore;

use self::image::references;
use self::placement::homes;
use self::prepare::layer_users;
use self::run::Run;
use crate::cache::Cache;
use crate::interrupt::Stop;
use crate::push::events::Observer;
use crate::push::plan::{Plan, PlannedImage};
use crate::registry::client::{Client, ConnectOptions};
use crate::registry::credentials::Login;
use crate::source::{Artifact, Layer as SourceLayer};

// The old paths (`push::execute::ImageResult`, ...) keep working.
pub(crate) use self::manifests::put_tagged;
pub use self::run::Options;
pub use crate::push::result::{BlobCounts, ImageResult, Placement, Status};

/// The results of a run's images (or lists) as they finish, each told to
/// the observer.
pub(crate) struct Finished<'o> {
    observer: &'o dyn Observer,
    slots: Mutex<Vec<Option<ImageResult>>>,
}

impl<'o> Finished<'o> {
    pub(crate) fn new(observer: &'o dyn Observer, count: usize) -> Finished<'o> {
        Finished {
            observer,
            slots: Mutex::new(vec![None; count]),
        }
    }

    pub(crate) fn record(&self, id: usize, result: ImageResult) {
        self.observer.image_done(id, &result);
        self.slots.lock().expect("results poisoned")[id] = Some(result);
    }

    /// Every result, in id order; one that never finished (the run was
    /// interrupted) is `unfinished(id)` with [`Status::Interrupted`], and
    /// told to the observer too.
    pub(crate) fn into_results(
        self,
        unfinished: impl Fn(usize) -> ImageResult,
    ) -> Vec<ImageResult> {
        let slots = self.slots.into_inner().expect("results poisoned");
        slots
            .into_iter()
            .enumerate()
            .map(|(id, slot)| {
                slot.unwrap_or_else(|| {
                    let result = ImageResult {
                        status: Status::Interrupted,
                        ..unfinished(id)
                    };
                    self.observer.image_done(id, &result);
                    result
                })
            })
            .collect()
    }
}

/// The order in which images start, and so queue for the compression
/// permits (a fair semaphore): the image with the largest layer kvpush
/// may compress (a raw one; Bazel's gzip files are never recompressed)
/// first, since a big layer started last leaves the other cores
/// idle while it finishes (the bench's cold push ended on virt-launcher's
/// 100 MB layer, a core idle for its last 0.3 s). Ties keep target order.
fn work_order(plan: &Plan) -> Vec<usize> {
    let largest_raw_layer = |planned: &PlannedImage| match &planned.image {
        Ok(Artifact::Image(image)) => image
            .layers
            .iter()
            .filter_map(|l| match l {
                SourceLayer::Raw(range) => Some(range.len),
                SourceLayer::Compressed { .. } => None,
            })
            .max()
            .unwrap_or(0),
        _ => 0,
    };
    let mut order: Vec<usize> = (0..plan.images.len()).collect();
    order.sort_by_key(|&id| std::cmp::Reverse(largest_raw_layer(&plan.images[id])));
    order
}

/// One client per registry host ([`Client::connect`]), so that a registry
/// that is not there at all, or refuses the credentials, fails once, up
/// front. `hosts` gives the host of each destination: the first requests
/// (one per destination, at once) find as many connections already open,
/// up to [`Options::requests_in_flight`].
pub(crate) async fn connect<'a>(
    hosts: impl Iterator<Item = &'a str>,
    options: &Options,
) -> Result<HashMap<String, Client>, String> {
    let mut destinations: Vec<(&str, usize)> = Vec::new();
    for host in hosts {
        match destinations.iter_mut().find(|(h, _)| *h == host) {
            Some((_, n)) => *n += 1,
            None => destinations.push((host, 1)),
        }
    }
    let mut clients = HashMap::new();
    for (host, n) in destinations {
        let connect = ConnectOptions {
            warm_connections: n.min(options.requests_in_flight()),
            ..options.connect_options()
        };
        let client = Client::connect(host, Login::Push(options.credential.clone()), &connect)
            .await
            .map_err(|e| e.to_string())?;
        clients.insert(host.to_string(), client);
    }
    Ok(clients)
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The run's one compression level, settled before any layer is
/// compressed: `--compression-level auto` weighs the link (from how long
/// connecting to each registry took, `per_host`) against the cores.
fn choose_level(
    options: &Options,
    per_host: std::time::Duration,
    all_loopback: bool,
) -> crate::compress::LevelChoice {
    use crate::compress::{choose, LinkEstimate};
    let link = LinkEstimate::from_env_or(per_host, all_loopback);
    let choice = choose(options.compression_level, link, available_cores());
    tracing::info!("compression: level {} ({})", choice.level, choice.why);
    choice
}

/// Push every image of the plan, telling `observer` how it goes. When
/// `stop` comes, everything in flight is dropped at once and the images not
/// done are reported [`Status::Interrupted`], with the blobs they placed.
pub async fn execute(
    plan: &Plan,
    options: Options,
    observer: &dyn Observer,
    stop: &Stop,
) -> Result<Vec<ImageResult>, String> {
    let counts: Vec<Mutex<BlobCounts>> = plan.images.iter().map(|_| Mutex::default()).collect();
    let finished = Finished::new(observer, plan.images.len());
    let work = async {
        let hosts = plan
            .images
            .iter()
            .flat_map(|i| &i.destinations)
            .map(|d| d.host.as_str());
        let connecting = std::time::Instant::now();
        let host_count = hosts
            .clone()
            .collect::<std::collections::HashSet<_>>()
            .len();
        let all_loopback = hosts.clone().all(crate::registry::endpoint::is_loopback);
        let clients = connect(hosts, &options).await?;
        let level = choose_level(
            &options,
            connecting.elapsed() / host_count.max(1) as u32,
            all_loopback,
        );
        // What killed runs left; dropped after `run`, so the lock outlives
        // the directory it guards.
        spool::sweep_stale();
        let (spool_dir, _spool_lock) = spool::create()?;
        let cache = options.cache_dir.clone().map(Cache::new);
        if let Some(cache) = &cache {
            cache.sweep_stale_temps();
        }
        let cores = available_cores();
        let run = Run {
            observer,
            stop,
            clients,
            origin_clients: Mutex::default(),
            permits: Semaphore::new(options.requests_in_flight()),
            cpu_permits: Semaphore::new((cores / 2).clamp(2, options.jobs.max(2))),
            cache,
            settings: crate::compress::settings_id(level.level),
            level,
            options,
            spool_dir,
            spool_seq: AtomicU64::new(0),
            layers: Mutex::default(),
            repaired: Mutex::default(),
            homes: homes(plan),
            layer_users: layer_users(plan),
            placed: Mutex::default(),
            counts: &counts,
        };
        let (run, finished) = (&run, &finished);
        join_all(work_order(plan).into_iter().map(|id| {
            let planned = &plan.images[id];
            async move {
                run.observer.image_started(id, planned);
                finished.record(id, run.push_image(id, planned).await);
            }
        }))
        .await;
        Ok::<_, String>(())
    };
    if let Ok(done) = stop.or(work).await {
        done?;
    }
    let mut results = finished.into_results(|id| {
        let planned = &plan.images[id];
        ImageResult::new(planned.target, &planned.name, references(planned))
    });
    // Blobs placed in an image's home repository by another image count
    // for it, even when they landed after it was done.
    for (result, counts) in results.iter_mut().zip(counts) {
        result.blobs = counts.into_inner().expect("counts poisoned");
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::blob::FileRange;
    use crate::push::plan::SourceKind;
    use crate::source::Image;

    fn image_with_layers(layers: Vec<SourceLayer>) -> Result<Artifact, String> {
        Ok(Artifact::Image(Image {
            source: PathBuf::from("image.tar"),
            config: Vec::new(),
            config_digest: String::new(),
            diff_ids: Vec::new(),
            layers,
            expected_digest: None,
        }))
    }

    fn raw(len: u64) -> SourceLayer {
        SourceLayer::Raw(FileRange {
            path: PathBuf::from("image.tar"),
            offset: 0,
            len,
        })
    }

    fn planned(name: &str, image: Result<Artifact, String>) -> PlannedImage {
        PlannedImage {
            target: crate::targets::TARGETS[0],
            name: name.to_string(),
            source: SourceKind::Tarball,
            source_file: PathBuf::from("image.tar"),
            note: None,
            image,
            destinations: Vec::new(),
        }
    }

    #[test]
    fn images_start_largest_layer_to_compress_first_ties_in_target_order() {
        let bazel_compressed = SourceLayer::Compressed {
            range: FileRange {
                path: PathBuf::from("layer.tar.gz"),
                offset: 0,
                len: 1 << 40,
            },
            digest: String::new(),
            diff_id: String::new(),
        };
        let plan = Plan {
            bazel_bin: PathBuf::from("bazel-bin"),
            images: vec![
                planned("small", image_with_layers(vec![raw(10), raw(20)])),
                planned("broken", Err("no tarball".into())),
                planned("big", image_with_layers(vec![raw(5), raw(500)])),
                // Bazel's gzip is never compressed again: it counts for nothing.
                planned(
                    "prebuilt",
                    image_with_layers(vec![bazel_compressed, raw(20)]),
                ),
                planned("medium", image_with_layers(vec![raw(100)])),
            ],
        };
        let names: Vec<&str> = work_order(&plan)
            .into_iter()
            .map(|id| plan.images[id].name.as_str())
            .collect();
        assert_eq!(names, ["big", "medium", "small", "prebuilt", "broken"]);
    }
}
