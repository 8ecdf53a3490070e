#include "block/drivers/nbd/handshake.h"

#include <array>

#include "nbd/protocol.h"
#include "nbd/wire.h"

namespace strata::nbdc {

using namespace strata::nbd;

namespace {

constexpr uint64_t kOldstyleMagic = 0x00420281861253ull;
constexpr size_t kOptionReplyHeader = 20;
constexpr size_t kMaxListedExports = 1 << 16;  // bounds what a server can make us hold

struct OptionReply {
  uint32_t type = 0;
  std::vector<uint8_t> data;
  bool is_error() const { return type & kRepErrBit; }
  std::string message() const { return std::string(data.begin(), data.end()); }
};

Task<Result<void>> co_send_option(Channel& ch, uint32_t option, const std::vector<uint8_t>& data) {
  Writer w;
  w.u64(kIHaveOpt).u32(option).u32(static_cast<uint32_t>(data.size()));
  w.bytes().insert(w.bytes().end(), data.begin(), data.end());
  co_return co_await ch.co_write_bytes(w.bytes());
}

Task<Result<OptionReply>> co_read_option_reply(Channel& ch, uint32_t option) {
  std::array<uint8_t, kOptionReplyHeader> header;
  STRATA_CO_TRY(co_await ch.co_read_exact(header));
  Reader r(header.data(), header.size());
  uint64_t magic = r.u64();
  uint32_t echoed = r.u32();
  OptionReply reply;
  reply.type = r.u32();
  uint32_t length = r.u32();
  if (magic != kOptReplyMagic) co_return Error{EPROTO, "NBD server sent a bad option reply magic"};
  if (echoed != option) {
    co_return Error{EPROTO, std::string("NBD server replied to option ") + option_name(echoed) +
                                " instead of " + option_name(option)};
  }
  if (length > kMaxOptionLength)
    co_return Error{EPROTO, "NBD server sent an oversized option reply"};
  reply.data.resize(length);
  STRATA_CO_TRY(co_await ch.co_read_exact(reply.data));
  co_return reply;
}

Error option_error(uint32_t option, const OptionReply& reply) {
  std::string what = std::string("NBD server refused ") + option_name(option);
  std::string msg = reply.message();
  if (!valid_string(msg)) msg.clear();
  if (!msg.empty()) what += ": " + msg;
  switch (reply.type) {
    case kRepErrUnknown:
      return Error{ENOENT, what};
    case kRepErrTlsReqd:
      return Error{EPERM, what + " (the server requires TLS)"};
    case kRepErrPolicy:
      return Error{EACCES, what};
    case kRepErrUnsup:
      return Error{ENOTSUP, what};
    default:
      return Error{EINVAL, what};
  }
}

// Sends an option without data and expects ACK (true) or an error (false).
Task<Result<bool>> co_simple_option(Channel& ch, uint32_t option) {
  STRATA_CO_TRY(co_await co_send_option(ch, option, {}));
  STRATA_CO_TRY_ASSIGN(OptionReply reply, co_await co_read_option_reply(ch, option));
  if (reply.is_error()) co_return false;
  if (reply.type != kRepAck) co_return Error{EPROTO, "NBD server sent an unexpected option reply"};
  co_return true;
}

Task<Result<std::unique_ptr<Channel>>> co_greeting(std::unique_ptr<Stream> stream,
                                                   const HandshakeParams& params, bool* no_zeroes) {
  std::array<uint8_t, 18> hello;
  STRATA_CO_TRY(co_await stream->co_read_exact(hello));
  Reader r(hello.data(), hello.size());
  uint64_t magic = r.u64();
  uint64_t second = r.u64();
  uint16_t flags = r.u16();
  if (magic != kNbdMagic) co_return Error{EPROTO, "Not an NBD server (bad magic)"};
  if (second == kOldstyleMagic) co_return Error{EPROTO, "Oldstyle NBD servers are not supported"};
  if (second != kIHaveOpt) co_return Error{EPROTO, "NBD server sent a bad newstyle magic"};
  if (!(flags & kFlagFixedNewstyle)) {
    co_return Error{EPROTO, "NBD server does not support fixed newstyle negotiation"};
  }
  *no_zeroes = flags & kFlagNoZeroes;
  uint32_t client_flags = kClientFixedNewstyle | (*no_zeroes ? kClientNoZeroes : 0);
  Writer w;
  w.u32(client_flags);
  STRATA_CO_TRY(co_await stream->co_write(std::span<const uint8_t>(w.bytes())));
  std::unique_ptr<Channel> channel = std::make_unique<PlainChannel>(std::move(stream));
  if (!params.start_tls) co_return channel;
  STRATA_CO_TRY(co_await co_send_option(*channel, kOptStartTls, {}));
  STRATA_CO_TRY_ASSIGN(OptionReply reply, co_await co_read_option_reply(*channel, kOptStartTls));
  if (reply.type != kRepAck) {
    co_return Error{
        ENOTSUP, "NBD server does not support TLS: " + option_error(kOptStartTls, reply).message};
  }
  auto plain = static_cast<PlainChannel*>(channel.get())->release();
  auto tls = co_await params.start_tls(std::move(plain));
  if (!tls && tls.error().message.rfind("TLS", 0) != 0) {
    // A server that rejects our key or certificate just hangs up mid-handshake.
    co_return Error{tls.error().code, "TLS handshake failed: " + tls.error().message};
  }
  co_return tls;
}

Task<Result<void>> co_meta_context(Channel& ch, const HandshakeParams& params, ExportInfo* info) {
  Writer w;
  w.u32(static_cast<uint32_t>(params.export_name.size())).str(params.export_name);
  w.u32(1).u32(static_cast<uint32_t>(params.meta_context.size())).str(params.meta_context);
  STRATA_CO_TRY(co_await co_send_option(ch, kOptSetMetaContext, w.bytes()));
  for (int replies = 0;; replies++) {
    STRATA_CO_TRY_ASSIGN(OptionReply reply, co_await co_read_option_reply(ch, kOptSetMetaContext));
    if (reply.type == kRepAck || reply.is_error()) co_return Result<void>{};
    if (reply.type != kRepMetaContext || replies > 0) {
      co_return Error{EPROTO, "NBD server sent an unexpected meta context reply"};
    }
    Reader r(reply.data);
    uint32_t id = r.u32();
    std::string name = r.str(r.remaining());
    if (r.failed() || name != params.meta_context) {
      co_return Error{EPROTO, "NBD server granted a meta context that was not requested"};
    }
    info->has_context = true;
    info->context_id = id;
  }
}

Result<void> parse_info(const OptionReply& reply, ExportInfo* info, bool* have_export) {
  Reader r(reply.data);
  uint16_t type = r.u16();
  if (type == kInfoExport) {
    info->size = r.u64();
    info->flags = r.u16();
    *have_export = true;
  } else if (type == kInfoBlockSize) {
    info->min_block = r.u32();
    info->pref_block = r.u32();
    info->max_block = r.u32();
    auto pow2 = [](uint32_t v) { return v && !(v & (v - 1)); };
    if (!r.failed() &&
        (!pow2(info->min_block) || info->min_block > (64u << 10) || !pow2(info->pref_block) ||
         info->pref_block < info->min_block || info->max_block < info->min_block)) {
      return Error{EPROTO, "NBD server sent invalid block size constraints"};
    }
  } else {
    return {};  // name, description, unknown: not needed
  }
  if (r.failed()) return Error{EPROTO, "NBD server sent a truncated export information reply"};
  return {};
}

// GO with a block-size request; ENOTSUP if the server does not know GO.
Task<Result<void>> co_go(Channel& ch, const HandshakeParams& params, ExportInfo* info) {
  Writer w;
  w.u32(static_cast<uint32_t>(params.export_name.size())).str(params.export_name);
  w.u16(1).u16(kInfoBlockSize);
  STRATA_CO_TRY(co_await co_send_option(ch, kOptGo, w.bytes()));
  bool have_export = false;
  for (;;) {
    STRATA_CO_TRY_ASSIGN(OptionReply reply, co_await co_read_option_reply(ch, kOptGo));
    if (reply.is_error()) co_return option_error(kOptGo, reply);
    if (reply.type == kRepAck) break;
    if (reply.type != kRepInfo) co_return Error{EPROTO, "NBD server sent an unexpected GO reply"};
    STRATA_CO_TRY(parse_info(reply, info, &have_export));
  }
  if (!have_export) co_return Error{EPROTO, "NBD server did not describe the export"};
  co_return Result<void>{};
}

Task<Result<void>> co_export_name(Channel& ch, const HandshakeParams& params, bool no_zeroes,
                                  ExportInfo* info) {
  std::vector<uint8_t> name(params.export_name.begin(), params.export_name.end());
  STRATA_CO_TRY(co_await co_send_option(ch, kOptExportName, name));
  std::array<uint8_t, 10> reply;
  STRATA_CO_TRY(co_await ch.co_read_exact(reply));
  Reader r(reply.data(), reply.size());
  info->size = r.u64();
  info->flags = r.u16();
  if (!no_zeroes) {
    std::array<uint8_t, 124> padding;
    STRATA_CO_TRY(co_await ch.co_read_exact(padding));
  }
  co_return Result<void>{};
}

// The export must be addressable with signed 64-bit offsets (as in QEMU) and
// made of whole blocks.
Result<void> check_export(const ExportInfo& info) {
  if (info.size > static_cast<uint64_t>(INT64_MAX)) {
    return Error{EPROTO, "NBD server sent an export size too large (" + std::to_string(info.size) +
                             " bytes)"};
  }
  if (info.size % info.min_block) {
    return Error{EPROTO, "NBD export size " + std::to_string(info.size) +
                             " is not a multiple of the minimum block size " +
                             std::to_string(info.min_block)};
  }
  return {};
}

}  // namespace

Task<Result<Negotiated>> co_client_handshake(std::unique_ptr<Stream> stream,
                                             const HandshakeParams& params) {
  if (params.export_name.size() > kMaxStringSize)
    co_return Error{EINVAL, "NBD export name too long"};
  Negotiated out;
  bool no_zeroes = false;
  STRATA_CO_TRY_ASSIGN(out.channel, co_await co_greeting(std::move(stream), params, &no_zeroes));
  Channel& ch = *out.channel;
  STRATA_CO_TRY_ASSIGN(bool extended, co_await co_simple_option(ch, kOptExtendedHeaders));
  out.info.extended = extended;
  out.info.structured = extended;
  if (!extended) {
    STRATA_CO_TRY_ASSIGN(bool structured, co_await co_simple_option(ch, kOptStructuredReply));
    out.info.structured = structured;
  }
  if (out.info.structured && !params.meta_context.empty()) {
    STRATA_CO_TRY(co_await co_meta_context(ch, params, &out.info));
  }
  auto go = co_await co_go(ch, params, &out.info);
  if (!go && go.error().code == ENOTSUP && !out.info.structured) {
    go = co_await co_export_name(ch, params, no_zeroes, &out.info);
  }
  if (!go) co_return std::move(go).error();
  STRATA_CO_TRY(check_export(out.info));
  if (!(out.info.flags & kFlagHasFlags)) out.info.flags = kFlagHasFlags;
  co_return out;
}

namespace {

// The names (and descriptions) LIST gives.
Task<Result<std::vector<ListedExport>>> co_list_names(Channel& ch) {
  STRATA_CO_TRY(co_await co_send_option(ch, kOptList, {}));
  std::vector<ListedExport> out;
  for (;;) {
    STRATA_CO_TRY_ASSIGN(OptionReply reply, co_await co_read_option_reply(ch, kOptList));
    if (reply.type == kRepAck) co_return out;
    if (reply.is_error()) co_return option_error(kOptList, reply);
    if (reply.type != kRepServer)
      co_return Error{EPROTO, "NBD server sent an unexpected LIST reply"};
    Reader r(reply.data);
    uint32_t len = r.u32();
    ListedExport e;
    e.name = r.str(len);
    e.description = r.str(r.remaining());
    if (r.failed() || out.size() >= kMaxListedExports) {
      co_return Error{EPROTO, "NBD server sent an invalid LIST reply"};
    }
    out.push_back(std::move(e));
  }
}

// INFO with a block size request; false when the server does not know INFO.
Task<Result<bool>> co_export_info(Channel& ch, ListedExport& e) {
  Writer w;
  w.u32(static_cast<uint32_t>(e.name.size())).str(e.name);
  w.u16(1).u16(kInfoBlockSize);
  STRATA_CO_TRY(co_await co_send_option(ch, kOptInfo, w.bytes()));
  ExportInfo info;
  info.min_block = info.pref_block = info.max_block = 0;
  bool have_export = false, sizes = false;
  for (;;) {
    STRATA_CO_TRY_ASSIGN(OptionReply reply, co_await co_read_option_reply(ch, kOptInfo));
    if (reply.type == kRepErrUnsup) co_return false;
    if (reply.is_error()) co_return option_error(kOptInfo, reply);
    if (reply.type == kRepAck) break;
    if (reply.type != kRepInfo) co_return Error{EPROTO, "NBD server sent an unexpected INFO reply"};
    sizes |= reply.data.size() >= 2 && reply.data[0] == 0 && reply.data[1] == kInfoBlockSize;
    STRATA_CO_TRY(parse_info(reply, &info, &have_export));
  }
  if (!have_export) co_return Error{EPROTO, "NBD server did not describe the export"};
  e.has_info = true;
  e.size = info.size;
  e.flags = info.flags;
  if (sizes) {
    e.min_block = info.min_block;
    e.pref_block = info.pref_block;
    e.max_block = info.max_block;
  }
  co_return true;
}

// Every meta context of the export (LIST_META_CONTEXT without queries).
Task<Result<void>> co_export_contexts(Channel& ch, ListedExport& e) {
  Writer w;
  w.u32(static_cast<uint32_t>(e.name.size())).str(e.name).u32(0);
  STRATA_CO_TRY(co_await co_send_option(ch, kOptListMetaContext, w.bytes()));
  for (;;) {
    STRATA_CO_TRY_ASSIGN(OptionReply reply, co_await co_read_option_reply(ch, kOptListMetaContext));
    if (reply.type == kRepAck || reply.is_error()) co_return Result<void>{};
    if (reply.type != kRepMetaContext || e.contexts.size() >= kMaxListedExports) {
      co_return Error{EPROTO, "NBD server sent an unexpected meta context reply"};
    }
    Reader r(reply.data);
    r.u32();
    std::string name = r.str(r.remaining());
    if (r.failed()) co_return Error{EPROTO, "NBD server sent a truncated meta context reply"};
    e.contexts.push_back(std::move(name));
  }
}

}  // namespace

Task<Result<std::vector<ListedExport>>> co_list_exports(std::unique_ptr<Stream> stream,
                                                        StartTls start_tls) {
  HandshakeParams params;
  params.start_tls = std::move(start_tls);
  bool no_zeroes = false;
  STRATA_CO_TRY_ASSIGN(auto channel, co_await co_greeting(std::move(stream), params, &no_zeroes));
  Channel& ch = *channel;
  STRATA_CO_TRY_ASSIGN(bool structured, co_await co_simple_option(ch, kOptStructuredReply));
  auto names = co_await co_list_names(ch);
  if (!names && names.error().code == ENOTSUP) {
    co_return Error{ENOTSUP, "Server does not support export lists"};
  }
  if (!names) co_return names;
  for (auto& e : *names) {
    STRATA_CO_TRY_ASSIGN(bool info, co_await co_export_info(ch, e));
    if (!info) break;
    if (structured) STRATA_CO_TRY(co_await co_export_contexts(ch, e));
  }
  // ABORT as a courtesy before hanging up; its reply does not matter.
  (void)co_await co_send_option(ch, kOptAbort, {});
  channel->close();
  co_return names;
}

}  // namespace strata::nbdc
