//! Stable hashing of balancer keys and instance ids: the same value in every
//! process, so several gateways send one key to the same instance.

/// splitmix64 finaliser: spreads a 64-bit value.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable hash of a key (the same across processes, so several gateways agree).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    // FNV-1a, fed through the splitmix finaliser.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}
