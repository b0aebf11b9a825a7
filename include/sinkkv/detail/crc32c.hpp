// sinkkv::detail: CRC-32C (Castagnoli), the checksum of snapshots.
//
// Why CRC-32C and not a hash: it detects every error of up to 3 flipped bits
// in any record shorter than 2^31 bits, and every burst of up to 32 bits,
// by construction (Castagnoli et al. 1993; Koopman 2002), which is the
// corruption that storage and transfers produce; a 32-bit hash detects them
// only with probability 1 - 2^-32. It is the checksum of iSCSI (RFC 3720),
// ext4 and Btrfs metadata, and LevelDB/RocksDB records. Written here rather
// than taken from a library so that sinkkv keeps Eigen as its only
// dependency (docs/design.md, "Snapshots").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "abi_namespace.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// Reflected CRC-32C polynomial (0x1EDC6F41 bit-reversed).
inline constexpr std::uint32_t kCrc32cPolynomial = 0x82F63B78u;

/// Slicing-by-8 tables: table[0] is the byte-at-a-time table; table[k][b]
/// is the CRC of byte b followed by k zero bytes. 8 KiB, built at compile
/// time.
struct Crc32cTables {
  std::array<std::array<std::uint32_t, 256>, 8> table{};
};

constexpr Crc32cTables make_crc32c_tables() {
  Crc32cTables tables;
  for (std::uint32_t byte = 0; byte < 256; ++byte) {
    std::uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) != 0 ? (crc >> 1) ^ kCrc32cPolynomial : crc >> 1;
    tables.table[0][byte] = crc;
  }
  for (std::size_t k = 1; k < 8; ++k) {
    for (std::size_t byte = 0; byte < 256; ++byte) {
      const std::uint32_t previous = tables.table[k - 1][byte];
      tables.table[k][byte] = (previous >> 8) ^ tables.table[0][previous & 0xFFu];
    }
  }
  return tables;
}

inline constexpr Crc32cTables kCrc32cTables = make_crc32c_tables();

/// A running CRC-32C: update() over any split of the bytes gives the same
/// value(). Software slicing-by-8, the same bytes on every host (no
/// instruction-set dependence, so no one-definition-rule hazard between
/// translation units built with different flags). O(n), no allocation.
class Crc32c {
 public:
  void update(const void* data, std::size_t size) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    std::uint32_t crc = state_;
    const auto& t = kCrc32cTables.table;
    for (; size >= 8; size -= 8, p += 8) {
      // Little-endian reads of two words, whatever the host's byte order
      // (compilers turn this into one load on little-endian hosts).
      const std::uint32_t low = crc ^ (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                                       static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
      crc = t[7][low & 0xFFu] ^ t[6][(low >> 8) & 0xFFu] ^ t[5][(low >> 16) & 0xFFu] ^ t[4][low >> 24] ^
            t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    }
    for (; size > 0; --size, ++p) crc = (crc >> 8) ^ t[0][(crc ^ *p) & 0xFFu];
    state_ = crc;
  }
  /// The CRC-32C of every byte given so far.
  std::uint32_t value() const { return ~state_; }

 private:
  std::uint32_t state_ = 0xFFFFFFFFu;
};

/// CRC-32C of one buffer.
inline std::uint32_t crc32c(const void* data, std::size_t size) {
  Crc32c crc;
  crc.update(data, size);
  return crc.value();
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
