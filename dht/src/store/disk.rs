//! Between the core's view of the disk and the database: what a node starts from, and the
//! core's writes as batches.

use libp2p::{Multiaddr, PeerId};
use serde_bytes::ByteBuf;
use shoal_swim::Address;

use super::{Batch, Pairs, Persist, StorageError};
use crate::core::{Restored, WriteOp};

/// The core's writes as a batch for the writer.
pub fn to_batch(ops: Vec<WriteOp<PeerId>>) -> Batch {
    let mut batch = Batch::new();
    for op in ops {
        match op {
            WriteOp::PutRecord { key, envelope } => {
                batch.put_record(key, envelope);
            }
            WriteOp::RemoveRecord(key) => {
                batch.remove_record(key);
            }
            WriteOp::PutNotice {
                key,
                publisher,
                envelope,
            } => {
                batch.put_notice(key, publisher, envelope);
            }
            WriteOp::RemoveNotice { key, publisher } => {
                batch.remove_notice(key, publisher);
            }
            WriteOp::Snapshot(peers) => {
                batch.replace_routing(snapshot_pairs(peers));
            }
            WriteOp::Meta(meta) => {
                batch.raise_meta(meta);
            }
        }
    }
    batch
}

/// The routing snapshot as the database keeps it: peer id bytes, and a CBOR list of address
/// bytes.
pub fn snapshot_pairs(peers: Vec<(PeerId, Vec<Address>)>) -> Pairs {
    peers
        .into_iter()
        .map(|(peer, addrs)| {
            let addrs: Vec<ByteBuf> = addrs.into_iter().map(|a| ByteBuf::from(a.0)).collect();
            // Invariant: a list of byte strings always encodes.
            let addrs = cbor4ii::serde::to_vec(Vec::new(), &addrs).expect("bytes encode");
            (peer.to_bytes(), addrs)
        })
        .collect()
}

/// What the database holds, for the core to start from: records, notices, the routing
/// snapshot (unreadable entries and this node skipped, at most
/// [`crate::core::MAX_SNAPSHOT_SEEDS`] peers with an address) and the clocks.
pub fn read_disk(persist: &Persist, local: PeerId) -> Result<Restored<PeerId>, StorageError> {
    let snapshot = persist
        .routing()?
        .into_iter()
        .filter_map(|(peer, addrs)| {
            let peer = PeerId::from_bytes(&peer).ok()?;
            let addrs: Vec<ByteBuf> = cbor4ii::serde::from_slice(&addrs).ok()?;
            let addrs: Vec<Address> = addrs
                .into_iter()
                .take(16)
                .filter(|a| Multiaddr::try_from(a.to_vec()).is_ok())
                .map(|a| Address(a.into_vec()))
                .collect();
            (peer != local && !addrs.is_empty()).then_some((peer, addrs))
        })
        .take(crate::core::MAX_SNAPSHOT_SEEDS)
        .collect();
    Ok(Restored {
        records: persist.records()?,
        notices: persist.notices()?,
        snapshot,
        meta: persist.meta()?,
    })
}
