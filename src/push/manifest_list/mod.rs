//! Multi-architecture manifest lists. KubeVirt builds each architecture
//! separately, pushes its images as `TAG-<arch>`, and
//! hack/push-container-manifest.sh stitches them with the docker or podman
//! CLI. kvpush does it itself: each child's manifest and config are read
//! from the registry (the config gives the platform), and a Docker manifest
//! list (an OCI index when a child is OCI) is pushed as `TAG`, in the same
//! repository. Nothing but the registry is consulted, so the final job of a
//! CI matrix needs no state from the per-architecture jobs.
//!
//! [`jobs`] plans the lists (local: architecture names, child tags, which
//! child each list names); [`put`] reads the children from the registry
//! and pushes the lists.

pub mod jobs;
pub mod put;

pub use jobs::{
    child_tag, goarch, jobs_by_tag, jobs_from_results, parse_arches, validate_child_tag, Child,
    ListJob, DEFAULT_CHILD_TAG,
};
pub use put::{build_list, push_lists};
