//! The wire contract: types and service stubs generated from
//! `proto/baton/v1/*.proto`, the encoded descriptor set for reflection, and
//! (in [`convert`]) the one place where wire types become domain types.

pub mod convert;

pub use convert::WireError;

/// Generated from the `baton.v1` protobuf package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("baton.v1");
}

/// The encoded `FileDescriptorSet` of the Baton protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));
