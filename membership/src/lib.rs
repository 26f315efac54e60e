//! Membership of a tree in etcd, so that no node needs another's address on
//! its command line and a tree spans machines.
//!
//! - [`etcd`]: a small client of etcd's v3 gRPC API (ranges, leases,
//!   watches), failing over between the cluster's members;
//! - [`member`]: what a node registers, and under which key;
//! - [`register`]: a node's own record, under a lease kept alive while it
//!   serves and revoked when it drains;
//! - [`discovery`]: an inner node's live view of who is registered, kept
//!   through etcd outages (the last view stands) and caught up afterwards
//!   (read again, then watch from the revision read);
//! - [`published`]: the newest version published through any root,
//!   announced so that every root of the tree pins it at once;
//! - [`args`]: the flags.
//!
//! Registration says who exists; whether a replica is healthy stays the
//! parent's business (its health checks and slow start), as in Vitess, where
//! the registry and health are kept apart.
#![warn(missing_docs)]

pub mod args;
pub mod discovery;
pub mod etcd;
pub mod member;
pub mod published;
pub mod register;

pub use args::{EtcdAccessArgs, MembershipArgs, TreeMembership};
pub use discovery::{Discovery, Members};
pub use etcd::{Etcd, EtcdCredentials, EtcdSecurity};
pub use member::Member;
pub use published::Announcements;
pub use register::Registration;

/// Code generated from the part of etcd's v3 API used here.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    /// etcd's services and their messages.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }

    /// etcd's key-value messages.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }

    pub use etcdserverpb::*;
}
