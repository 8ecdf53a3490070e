#include "block/drivers/nbd/address.h"

#include <cctype>
#include <charconv>

namespace strata::nbdc {

namespace {

Error invalid(const std::string& what) {
  return Error{EINVAL, what};
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

Result<uint16_t> parse_port(const std::string& text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty() || value == 0 ||
      value > 65535) {
    return invalid("Invalid NBD port '" + text + "'");
  }
  return static_cast<uint16_t>(value);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

Result<std::string> percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) return invalid("Invalid percent escape in NBD URI");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string percent_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// "host", "host:port" or "[v6]:port".
Result<void> parse_authority(const std::string& authority, NbdAddress* out) {
  std::string host = authority;
  std::string port;
  if (starts_with(authority, "[")) {
    size_t close = authority.find(']');
    if (close == std::string::npos) return invalid("Invalid IPv6 address in NBD URI");
    host = authority.substr(1, close - 1);
    std::string rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return invalid("Invalid NBD URI authority '" + authority + "'");
      port = rest.substr(1);
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return invalid("NBD URI requires a host name");
  out->host = host;
  if (!port.empty()) {
    STRATA_TRY_ASSIGN(out->port, parse_port(port));
  }
  return {};
}

// nbd[+tcp|+unix]://[authority]/[export][?socket=PATH]
Result<NbdAddress> parse_uri(const std::string& uri) {
  size_t scheme_end = uri.find("://");
  std::string scheme = uri.substr(0, scheme_end);
  bool is_unix = scheme == "nbd+unix";
  if (scheme != "nbd" && scheme != "nbd+tcp" && !is_unix) {
    return invalid("Unsupported NBD URI scheme '" + scheme + "'");
  }
  std::string rest = uri.substr(scheme_end + 3);
  std::string query;
  if (size_t q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash + 1);
  NbdAddress out;
  STRATA_TRY_ASSIGN(out.export_name, percent_decode(path));
  if (is_unix) {
    if (!authority.empty()) return invalid("NBD URI with nbd+unix must not name a host");
    if (!starts_with(query, "socket=") || query.find('&') != std::string::npos) {
      return invalid("NBD URI with nbd+unix needs exactly the query 'socket=PATH'");
    }
    STRATA_TRY_ASSIGN(out.unix_path, percent_decode(query.substr(7)));
    if (out.unix_path.empty()) return invalid("NBD URI has an empty socket path");
    return out;
  }
  if (!query.empty()) return invalid("NBD URI with TCP takes no query ('" + query + "')");
  STRATA_TRY(parse_authority(authority, &out));
  return out;
}

// nbd:unix:PATH[:exportname=E] or nbd:HOST:PORT[:exportname=E]
Result<NbdAddress> parse_legacy(const std::string& name) {
  std::string rest = name.substr(4);
  NbdAddress out;
  if (size_t e = rest.find(":exportname="); e != std::string::npos) {
    out.export_name = rest.substr(e + 12);
    rest = rest.substr(0, e);
  }
  if (starts_with(rest, "unix:")) {
    out.unix_path = rest.substr(5);
    if (out.unix_path.empty()) return invalid("NBD file name has an empty socket path");
    return out;
  }
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos) {
    out.host = rest;
  } else {
    out.host = rest.substr(0, colon);
    STRATA_TRY_ASSIGN(out.port, parse_port(rest.substr(colon + 1)));
  }
  if (out.host.empty()) return invalid("NBD file name requires a host name");
  return out;
}

}  // namespace

bool is_nbd_filename(const std::string& filename) {
  return starts_with(filename, "nbd://") || starts_with(filename, "nbd+tcp://") ||
         starts_with(filename, "nbd+unix://") || starts_with(filename, "nbd:");
}

Result<NbdAddress> parse_nbd_filename(const std::string& filename) {
  if (filename.find("://") != std::string::npos) return parse_uri(filename);
  if (starts_with(filename, "nbd:")) return parse_legacy(filename);
  return invalid("'" + filename + "' is not an NBD file name");
}

Result<NbdAddress> parse_server_option(const nlohmann::json& server,
                                       const std::string& export_name) {
  if (!server.is_object()) return invalid("Invalid parameter type for 'server', expected: object");
  NbdAddress out;
  out.export_name = export_name;
  std::string type = server.value("type", "");
  auto str = [&](const char* key) -> Result<std::string> {
    auto it = server.find(key);
    if (it == server.end())
      return invalid(std::string("Parameter 'server.") + key + "' is missing");
    if (it->is_number_unsigned()) return std::to_string(it->get<uint64_t>());
    if (!it->is_string()) {
      return invalid(std::string("Invalid parameter type for 'server.") + key +
                     "', expected: string");
    }
    return it->get<std::string>();
  };
  if (type == "unix") {
    STRATA_TRY_ASSIGN(out.unix_path, str("path"));
    if (out.unix_path.empty()) return invalid("Parameter 'server.path' must not be empty");
    return out;
  }
  if (type == "inet") {
    STRATA_TRY_ASSIGN(out.host, str("host"));
    STRATA_TRY_ASSIGN(std::string port, str("port"));
    STRATA_TRY_ASSIGN(out.port, parse_port(port));
    return out;
  }
  if (type.empty()) return invalid("Parameter 'server.type' is missing");
  return invalid("Parameter 'server.type' does not accept value '" + type + "'");
}

std::string NbdAddress::uri() const {
  if (is_unix()) return "nbd+unix:///" + percent_encode(export_name) + "?socket=" + unix_path;
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "nbd://" + h + ":" + std::to_string(port) + "/" + percent_encode(export_name);
}

nlohmann::json NbdAddress::server_json() const {
  if (is_unix()) return {{"type", "unix"}, {"path", unix_path}};
  return {{"type", "inet"}, {"host", host}, {"port", std::to_string(port)}};
}

}  // namespace strata::nbdc
