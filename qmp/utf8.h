// QEMU's "modified UTF-8": UTF-8 in which U+0000 is written as the
// overlong pair C0 80, so that strings never hold a zero byte. QMP strings
// are kept in this form (as QEMU keeps them), which makes a name sent as
// "\u0000" round-trip through QMP and onto disk exactly as with QEMU.
//
// Contract: pure functions, no state; usable from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace strata::qmp {

// True for a code point QEMU accepts in a string: at most U+10FFFF, not a
// surrogate (U+D800..DFFF), not one of Unicode's 66 noncharacters
// (U+FDD0..FDEF and U+xxFFFE / U+xxFFFF).
bool is_valid_code_point(int64_t cp);

// Decodes the sequence at the start of `s`. Returns the code point, or -1
// when the sequence is invalid (an impossible byte 0xFE/0xFF, a stray
// continuation byte, a missing continuation byte, an overlong form other
// than C0 80, or an invalid code point). `*length` is set to the bytes the
// sequence spans, as QEMU counts them: 1 for an impossible or continuation
// byte, the lead byte plus the continuation bytes present when one is
// missing, else the whole sequence (up to 6 bytes for the old 5- and 6-byte
// forms). An empty `s` gives -1 with length 0.
int32_t decode_mod_utf8(std::string_view s, size_t* length);

// Appends `cp` in modified UTF-8 (U+0000 as C0 80). Returns false, appending
// nothing, when `cp` is not a valid code point.
bool append_mod_utf8(std::string* out, int64_t cp);

}  // namespace strata::qmp
