//! The messages, as protobuf.

#[derive(Clone, PartialEq, prost::Message)]
pub struct Have {
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    #[prost(uint64, tag = "2")]
    pub generation: u64,
    #[prost(message, optional, tag = "3")]
    pub full: Option<Full>,
    #[prost(message, optional, tag = "4")]
    pub delta: Option<Delta>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Full {
    /// Hash functions of the filter.
    #[prost(uint32, tag = "1")]
    pub hashes: u32,
    #[prost(uint64, tag = "2")]
    pub seed: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub bits: Vec<u8>,
    /// Paths in the set.
    #[prost(uint64, tag = "4")]
    pub count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Delta {
    #[prost(uint64, tag = "1")]
    pub base: u64,
    /// 20-byte store hashes.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub added: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub removed: Vec<Vec<u8>>,
    #[prost(uint64, tag = "4")]
    pub count: u64,
}
