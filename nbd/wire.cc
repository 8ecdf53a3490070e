#include "nbd/wire.h"

#include <algorithm>

namespace strata::nbd {

namespace {
Error invalid(std::string message) {
  return Error{EINVAL, std::move(message)};
}
}  // namespace

bool valid_string(const std::string& s) {
  return s.size() <= kMaxStringSize && s.find('\0') == std::string::npos;
}

Result<InfoRequest> parse_info_request(std::span<const uint8_t> data) {
  Reader r(data.data(), data.size());
  uint32_t name_len = r.u32();
  if (r.failed()) return invalid("option data too short for the name length");
  if (name_len > kMaxStringSize) return invalid("export name too long");
  if (name_len > r.remaining()) return invalid("export name length exceeds the option data");
  InfoRequest out;
  out.name = r.str(name_len);
  if (!valid_string(out.name)) return invalid("export name contains NUL");
  uint16_t count = r.u16();
  if (r.failed()) return invalid("option data too short for the info request count");
  if (r.remaining() != size_t{count} * 2)
    return invalid("info request count does not match the option length");
  for (uint16_t i = 0; i < count; i++) out.infos.push_back(r.u16());
  return out;
}

Result<MetaRequest> parse_meta_request(std::span<const uint8_t> data) {
  Reader r(data.data(), data.size());
  uint32_t name_len = r.u32();
  if (r.failed()) return invalid("option data too short for the export name length");
  if (name_len > kMaxStringSize) return invalid("export name too long");
  if (name_len > r.remaining()) return invalid("export name length exceeds the option data");
  MetaRequest out;
  out.export_name = r.str(name_len);
  if (!valid_string(out.export_name)) return invalid("export name contains NUL");
  uint32_t count = r.u32();
  if (r.failed()) return invalid("option data too short for the query count");
  // Each query needs at least its 4-byte length.
  if (count > r.remaining() / 4) return invalid("query count exceeds the option data");
  for (uint32_t i = 0; i < count; i++) {
    uint32_t len = r.u32();
    if (r.failed() || len > r.remaining()) return invalid("query length exceeds the option data");
    if (len > kMaxStringSize) return invalid("query too long");
    std::string q = r.str(len);
    if (!valid_string(q)) return invalid("query contains NUL");
    out.queries.push_back(std::move(q));
  }
  if (!r.done()) return invalid("unexpected data after the queries");
  return out;
}

size_t request_header_size(bool extended) {
  return extended ? kExtendedRequestSize : kCompactRequestSize;
}

Result<Request> parse_request(std::span<const uint8_t> header, bool extended) {
  if (header.size() != request_header_size(extended)) return invalid("short request header");
  Reader r(header.data(), header.size());
  uint32_t magic = r.u32();
  uint32_t expected = extended ? kExtendedRequestMagic : kRequestMagic;
  if (magic != expected) return invalid("invalid request magic");
  Request req;
  req.flags = r.u16();
  req.type = r.u16();
  req.cookie = r.u64();
  req.offset = r.u64();
  req.length = extended ? r.u64() : r.u32();
  return req;
}

Result<BlockStatusPayload> parse_block_status_payload(std::span<const uint8_t> data) {
  if (data.size() < 8 || (data.size() - 8) % 4 != 0) {
    return invalid("malformed block status payload");
  }
  Reader r(data.data(), data.size());
  BlockStatusPayload out;
  out.effect_length = r.u64();
  while (r.remaining() > 0) {
    uint32_t id = r.u32();
    if (std::find(out.ids.begin(), out.ids.end(), id) != out.ids.end()) {
      return invalid("duplicate context id in block status payload");
    }
    out.ids.push_back(id);
  }
  if (out.ids.empty()) return invalid("block status payload names no context");
  return out;
}

uint32_t errno_to_nbd(int error) {
  switch (error) {
    case 0:
      return 0;
    case EPERM:
    case EROFS:
      return kEperm;
    case EIO:
      return kEio;
    case ENOMEM:
      return kEnomem;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kEnospc;
    case EOVERFLOW:
      return kEoverflow;
    case ENOTSUP:
      return kEnotsup;
    case ESHUTDOWN:
      return kEshutdown;
    default:
      return kEinval;
  }
}

const char* option_name(uint32_t option) {
  switch (option) {
    case kOptExportName:
      return "NBD_OPT_EXPORT_NAME";
    case kOptAbort:
      return "NBD_OPT_ABORT";
    case kOptList:
      return "NBD_OPT_LIST";
    case kOptPeekExport:
      return "NBD_OPT_PEEK_EXPORT";
    case kOptStartTls:
      return "NBD_OPT_STARTTLS";
    case kOptInfo:
      return "NBD_OPT_INFO";
    case kOptGo:
      return "NBD_OPT_GO";
    case kOptStructuredReply:
      return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext:
      return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext:
      return "NBD_OPT_SET_META_CONTEXT";
    case kOptExtendedHeaders:
      return "NBD_OPT_EXTENDED_HEADERS";
    default:
      return "unknown option";
  }
}

const char* command_name(uint16_t command) {
  switch (command) {
    case kCmdRead:
      return "NBD_CMD_READ";
    case kCmdWrite:
      return "NBD_CMD_WRITE";
    case kCmdDisc:
      return "NBD_CMD_DISC";
    case kCmdFlush:
      return "NBD_CMD_FLUSH";
    case kCmdTrim:
      return "NBD_CMD_TRIM";
    case kCmdCache:
      return "NBD_CMD_CACHE";
    case kCmdWriteZeroes:
      return "NBD_CMD_WRITE_ZEROES";
    case kCmdBlockStatus:
      return "NBD_CMD_BLOCK_STATUS";
    default:
      return "unknown command";
  }
}

}  // namespace strata::nbd
