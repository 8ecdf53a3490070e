// NBD option and request parsers: valid input, and every way the lengths
// inside option data can lie.
#include "nbd/wire.h"

#include <gtest/gtest.h>

#include "nbd/meta_context.h"
#include "nbd/replies.h"

namespace strata::nbd {
namespace {

std::vector<uint8_t> bytes(Writer& w) {
  return w.bytes();
}

TEST(NbdWire, InfoRequest) {
  Writer w;
  w.u32(4).str("disk").u16(2).u16(kInfoName).u16(kInfoBlockSize);
  auto r = parse_info_request(bytes(w));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->name, "disk");
  EXPECT_EQ(r->infos, (std::vector<uint16_t>{kInfoName, kInfoBlockSize}));
}

TEST(NbdWire, InfoRequestRejectsLyingLengths) {
  Writer name_past_end;
  name_past_end.u32(40).str("disk").u16(0);
  EXPECT_FALSE(parse_info_request(bytes(name_past_end)));
  Writer count_mismatch;
  count_mismatch.u32(0).u16(3).u16(1);
  EXPECT_FALSE(parse_info_request(bytes(count_mismatch)));
  Writer trailing;
  trailing.u32(0).u16(0).u8(7);
  EXPECT_FALSE(parse_info_request(bytes(trailing)));
  EXPECT_FALSE(parse_info_request({}));
  Writer huge_name;
  huge_name.u32(5000).zeroes(5000).u16(0);
  EXPECT_FALSE(parse_info_request(bytes(huge_name)));
  Writer nul;
  nul.u32(2).u8('a').u8(0).u16(0);
  EXPECT_FALSE(parse_info_request(bytes(nul)));
}

TEST(NbdWire, MetaRequest) {
  Writer w;
  w.u32(0).u32(2).u32(15).str("base:allocation").u32(5).str("qemu:");
  auto r = parse_meta_request(bytes(w));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->export_name, "");
  EXPECT_EQ(r->queries, (std::vector<std::string>{"base:allocation", "qemu:"}));
}

TEST(NbdWire, MetaRequestRejectsLyingLengths) {
  Writer too_many;
  too_many.u32(0).u32(1000000);
  EXPECT_FALSE(parse_meta_request(bytes(too_many)));
  Writer query_past_end;
  query_past_end.u32(0).u32(1).u32(99).str("base:");
  EXPECT_FALSE(parse_meta_request(bytes(query_past_end)));
  Writer trailing;
  trailing.u32(0).u32(0).u8(1);
  EXPECT_FALSE(parse_meta_request(bytes(trailing)));
  Writer short_count;
  short_count.u32(0).u16(1);
  EXPECT_FALSE(parse_meta_request(bytes(short_count)));
}

TEST(NbdWire, RequestHeaders) {
  Writer c;
  c.u32(kRequestMagic).u16(kCmdFlagFua).u16(kCmdWrite).u64(77).u64(4096).u32(512);
  auto r = parse_request(bytes(c), false);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->flags, kCmdFlagFua);
  EXPECT_EQ(r->type, kCmdWrite);
  EXPECT_EQ(r->cookie, 77u);
  EXPECT_EQ(r->offset, 4096u);
  EXPECT_EQ(r->length, 512u);
  EXPECT_FALSE(parse_request(bytes(c), true));  // wrong size for extended

  Writer e;
  e.u32(kExtendedRequestMagic).u16(0).u16(kCmdBlockStatus).u64(1).u64(0).u64(1ull << 40);
  r = parse_request(bytes(e), true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->length, 1ull << 40);

  Writer bad;
  bad.u32(0x12560953).u16(0).u16(0).u64(0).u64(0).u32(0);
  EXPECT_FALSE(parse_request(bytes(bad), false));
}

TEST(NbdWire, BlockStatusPayload) {
  Writer w;
  w.u64(1 << 20).u32(0).u32(1);
  auto r = parse_block_status_payload(bytes(w));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->effect_length, 1u << 20);
  EXPECT_EQ(r->ids, (std::vector<uint32_t>{0, 1}));
  Writer dup;
  dup.u64(1).u32(2).u32(2);
  EXPECT_FALSE(parse_block_status_payload(bytes(dup)));
  Writer none;
  none.u64(1);
  EXPECT_FALSE(parse_block_status_payload(bytes(none)));
  Writer ragged;
  ragged.u64(1).u16(0);
  EXPECT_FALSE(parse_block_status_payload(bytes(ragged)));
}

TEST(NbdWire, ErrnoMapping) {
  EXPECT_EQ(errno_to_nbd(EROFS), kEperm);
  EXPECT_EQ(errno_to_nbd(EDQUOT), kEnospc);
  EXPECT_EQ(errno_to_nbd(EFBIG), kEnospc);
  EXPECT_EQ(errno_to_nbd(EIO), kEio);
  EXPECT_EQ(errno_to_nbd(ENOTSUP), kEnotsup);
  EXPECT_EQ(errno_to_nbd(ENOENT), kEinval);
  // QEMU's server sends EACCES (a broken copy-before-write view) and
  // ETIMEDOUT (cbw-timeout) as EINVAL.
  EXPECT_EQ(errno_to_nbd(EACCES), kEinval);
  EXPECT_EQ(errno_to_nbd(ETIMEDOUT), kEinval);
}

std::vector<std::string> names(const std::vector<MetaContext>& v) {
  std::vector<std::string> out;
  for (const auto& c : v) out.push_back(c.name);
  return out;
}

TEST(NbdMetaContext, ListWildcardsAndSetExactNames) {
  ContextCatalog cat{true, {"b0", "b1"}};
  using V = std::vector<std::string>;
  EXPECT_EQ(names(match_contexts(cat, {}, true)),
            (V{"base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0",
               "qemu:dirty-bitmap:b1"}));
  EXPECT_EQ(names(match_contexts(cat, {"qemu:"}, true)),
            (V{"qemu:allocation-depth", "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1"}));
  EXPECT_EQ(names(match_contexts(cat, {"qemu:dirty-bitmap:"}, true)),
            (V{"qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1"}));
  EXPECT_EQ(names(match_contexts(cat, {"base:"}, true)), (V{"base:allocation"}));
  EXPECT_TRUE(match_contexts(cat, {"base:"}, false).empty());
  EXPECT_TRUE(match_contexts(cat, {"qemu:"}, false).empty());
  EXPECT_TRUE(match_contexts(cat, {}, false).empty());
  EXPECT_TRUE(match_contexts(cat, {"x-other:thing", "nbd-server:"}, true).empty());
  auto set =
      match_contexts(cat, {"qemu:dirty-bitmap:b1", "base:allocation", "base:allocation"}, false);
  ASSERT_EQ(set.size(), 2u);
  EXPECT_EQ(set[0].id, 0u);
  EXPECT_EQ(set[1].id, 3u);
  EXPECT_EQ(set[1].bitmap_index, 1u);
  EXPECT_TRUE(match_contexts(ContextCatalog{}, {"qemu:allocation-depth"}, false).empty());
}

TEST(NbdReplies, EncodingsPerMode) {
  Message m;
  ReplyEncoder(ReplyMode::kSimple, 9, 0).error(m, kEinval, "ignored");
  EXPECT_EQ(m.size(), kSimpleReplySize);
  Message s;
  ReplyEncoder(ReplyMode::kStructured, 9, 0).error(s, kEio, "boom");
  EXPECT_EQ(s.size(), kStructuredHeaderSize + 6 + 4);
  Message x;
  ReplyEncoder(ReplyMode::kExtended, 9, 512).success(x);
  EXPECT_EQ(x.size(), kExtendedHeaderSize);
  Message st;
  ReplyEncoder(ReplyMode::kStructured, 1, 0).status_chunk(st, 0, {{4096, 3}, {512, 0}}, true);
  EXPECT_EQ(st.size(), kStructuredHeaderSize + 4 + 16);
  Message se;
  ReplyEncoder(ReplyMode::kExtended, 1, 0).status_chunk(se, 0, {{1ull << 33, 0}}, true);
  EXPECT_EQ(se.size(), kExtendedHeaderSize + 8 + 16);
  std::vector<uint8_t> raw(se.size());
  se.iov().copy_to(0, raw.data(), raw.size());
  Reader r(raw);
  EXPECT_EQ(r.u32(), kExtendedReplyMagic);
  EXPECT_EQ(r.u16(), kReplyFlagDone);
  EXPECT_EQ(r.u16(), kChunkBlockStatusExt);
}

}  // namespace
}  // namespace strata::nbd
