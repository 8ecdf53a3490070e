#include "block/drivers/nbd/address.h"

#include <cctype>
#include <charconv>
#include <cstring>
#include <utility>
#include <vector>

namespace strata::nbdc {

namespace {

using nlohmann::json;

Error invalid(const std::string& what) {
  return Error{EINVAL, what};
}

Error invalid_url() {
  return invalid("No valid URL specified");
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

// RFC 3986 characters, as QEMU's URI parser accepts them.
bool is_unreserved(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~';
}
bool is_sub_delim(char c) {
  return std::strchr("!$&'()*+,;=", c) != nullptr && c != 0;
}
bool is_pchar(char c) {
  return is_unreserved(c) || is_sub_delim(c) || c == ':' || c == '@';
}

// Decodes %XX escapes; every other character must satisfy `allowed`.
Result<std::string> uri_decode(const std::string& s, bool (*allowed)(char)) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] != '%') {
      if (!allowed(s[i])) return invalid_url();
      out += s[i];
      continue;
    }
    int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) return invalid_url();
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool path_char(char c) {
  return is_pchar(c) || c == '/';
}
bool query_char(char c) {
  return is_pchar(c) || c == '/' || c == '?';
}
bool host_char(char c) {
  return is_unreserved(c) || is_sub_delim(c);
}

// The parts of nbd[+tcp|+unix]://[userinfo@]host[:port]/path?query#fragment.
struct UriParts {
  std::string scheme, host, path, query;
  bool has_port = false;
  uint16_t port = 0;  // 0: none given (or 0)
  bool has_query = false;
};

Result<void> parse_authority(const std::string& text, UriParts* out) {
  std::string hostport =
      text.substr(text.rfind('@') == std::string::npos ? 0 : text.rfind('@') + 1);
  std::string port;
  if (starts_with(hostport, "[")) {
    size_t close = hostport.find(']');
    if (close == std::string::npos) return invalid_url();
    out->host = hostport.substr(1, close - 1);
    std::string rest = hostport.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return invalid_url();
    if (!rest.empty()) {
      out->has_port = true;
      port = rest.substr(1);
    }
  } else {
    size_t colon = hostport.rfind(':');
    std::string host = hostport.substr(0, colon);
    if (colon != std::string::npos) {
      out->has_port = true;
      port = hostport.substr(colon + 1);
    }
    STRATA_TRY_ASSIGN(out->host, uri_decode(host, host_char));
  }
  if (!out->has_port) return {};
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return invalid_url();
  }
  out->port = static_cast<uint16_t>(value);
  return {};
}

Result<UriParts> split_uri(const std::string& uri) {
  UriParts out;
  size_t scheme_end = uri.find("://");
  out.scheme = uri.substr(0, scheme_end);
  std::string rest = uri.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find('#'));  // the fragment is ignored
  if (size_t q = rest.find('?'); q != std::string::npos) {
    out.has_query = true;
    out.query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    for (char c : out.query) {
      if (!query_char(c) && c != '%') return invalid_url();
    }
  }
  size_t slash = rest.find('/');
  STRATA_TRY(parse_authority(rest.substr(0, slash), &out));
  if (slash != std::string::npos) {
    STRATA_TRY_ASSIGN(out.path, uri_decode(rest.substr(slash), path_char));
  }
  return out;
}

// QEMU's query parameters: name=value pairs split at '&' or ';'.
Result<std::vector<std::pair<std::string, std::string>>> query_params(const std::string& query) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t start = 0;
  while (start < query.size()) {
    size_t end = query.find_first_of("&;", start);
    if (end == std::string::npos) end = query.size();
    std::string param = query.substr(start, end - start);
    start = end + 1;
    if (param.empty()) continue;
    size_t eq = param.find('=');
    if (eq == std::string::npos) return invalid_url();
    STRATA_TRY_ASSIGN(std::string name, uri_decode(param.substr(0, eq), query_char));
    STRATA_TRY_ASSIGN(std::string value, uri_decode(param.substr(eq + 1), query_char));
    out.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

// QEMU's nbd_parse_uri.
Result<json> options_from_uri(const std::string& uri) {
  STRATA_TRY_ASSIGN(UriParts parts, split_uri(uri));
  bool is_unix = parts.scheme == "nbd+unix";
  if (parts.scheme != "nbd" && parts.scheme != "nbd+tcp" && !is_unix) return invalid_url();
  json out = json::object();
  std::string path = starts_with(parts.path, "/") ? parts.path.substr(1) : parts.path;
  if (!path.empty()) out["export"] = path;
  STRATA_TRY_ASSIGN(auto params, query_params(parts.query));
  if (params.size() > 1 || is_unix != (params.size() == 1)) return invalid_url();
  if (is_unix) {
    if (!parts.host.empty() || parts.has_port || params[0].first != "socket") {
      return invalid_url();
    }
    out["server"] = {{"type", "unix"}, {"path", params[0].second}};
    return out;
  }
  if (parts.host.empty()) return invalid_url();
  uint16_t port = parts.port ? parts.port : kDefaultPort;
  out["server"] = {{"type", "inet"}, {"host", parts.host}, {"port", std::to_string(port)}};
  return out;
}

// QEMU's inet_parse for "host:port" and "[v6]:port" (no ",option" suffix).
Result<json> inet_server(const std::string& spec) {
  Error bad = invalid("error parsing address '" + spec + "'");
  std::string host, port;
  if (starts_with(spec, "[")) {
    size_t close = spec.find("]:");
    if (close == std::string::npos) return bad;
    host = spec.substr(1, close - 1);
    port = spec.substr(close + 2);
  } else {
    size_t colon = spec.find(':');
    if (colon == std::string::npos) return bad;
    host = spec.substr(0, colon);
    port = spec.substr(colon + 1);
  }
  if (host.empty() || !parse_port(port)) return bad;
  return json{{"type", "inet"}, {"host", host}, {"port", port}};
}

// QEMU's legacy nbd:unix:PATH[:exportname=E] and nbd:HOST:PORT[:exportname=E].
Result<json> options_from_legacy(const std::string& name) {
  constexpr const char* kExport = ":exportname=";
  json out = json::object();
  std::string file = name;
  if (size_t e = file.find(kExport); e != std::string::npos) {
    if (e + std::strlen(kExport) == file.size()) return invalid("NBD server address missing");
    out["export"] = file.substr(e + std::strlen(kExport));
    file = file.substr(0, e);
  }
  if (!starts_with(file, "nbd:")) return invalid("File name string for NBD must start with 'nbd:'");
  std::string host_spec = file.substr(4);
  if (host_spec.empty()) return invalid("NBD server address missing");
  if (starts_with(host_spec, "unix:")) {
    out["server"] = {{"type", "unix"}, {"path", host_spec.substr(5)}};
    return out;
  }
  STRATA_TRY_ASSIGN(out["server"], inet_server(host_spec));
  return out;
}

}  // namespace

Result<nlohmann::json> nbd_filename_options(const std::string& filename) {
  if (filename.find("://") != std::string::npos) return options_from_uri(filename);
  return options_from_legacy(filename);
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
  if (is_unix()) {
    return export_name.empty() ? "nbd+unix://?socket=" + unix_path
                               : "nbd+unix:///" + export_name + "?socket=" + unix_path;
  }
  std::string base = "nbd://" + host + ":" + std::to_string(port);
  return export_name.empty() ? base : base + "/" + export_name;
}

nlohmann::json NbdAddress::server_json() const {
  if (is_unix()) return {{"type", "unix"}, {"path", unix_path}};
  return {{"type", "inet"}, {"host", host}, {"port", std::to_string(port)}};
}

}  // namespace strata::nbdc
