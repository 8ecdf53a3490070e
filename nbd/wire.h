// Parsers for the variable parts of NBD messages: option payloads, request
// headers, and the block-status payload of the extended-headers extension.
//
// Contract: pure functions over byte ranges. A parse failure is returned as
// an Error whose message is fit to send to the client; it never reads past
// the given bytes. These are the functions the fuzz target feeds.
// Thread rules: none.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nbd/protocol.h"
#include "strata/result.h"

namespace strata::nbd {

// NBD_OPT_INFO / NBD_OPT_GO data.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> infos;
};
Result<InfoRequest> parse_info_request(std::span<const uint8_t> data);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data.
struct MetaRequest {
  std::string export_name;
  std::vector<std::string> queries;
};
Result<MetaRequest> parse_meta_request(std::span<const uint8_t> data);

// A transmission request in either header form.
struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // 32-bit in compact form
  // Set by the connection when it read and dropped a payload that was too
  // large; the request then fails with EINVAL.
  bool payload_dropped = false;
};
// `header` is 28 bytes (compact) or 32 bytes (extended). A wrong magic is an
// error (the stream cannot be resynchronised: disconnect).
Result<Request> parse_request(std::span<const uint8_t> header, bool extended);
size_t request_header_size(bool extended);

// Extended BLOCK_STATUS payload: the effect length, then context ids.
struct BlockStatusPayload {
  uint64_t effect_length = 0;
  std::vector<uint32_t> ids;
};
Result<BlockStatusPayload> parse_block_status_payload(std::span<const uint8_t> data);

// True if `s` is acceptable as an NBD string (no NUL, at most 4096 bytes).
bool valid_string(const std::string& s);

}  // namespace strata::nbd
