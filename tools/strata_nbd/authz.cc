#include "strata_nbd/authz.h"

#include <fnmatch.h>

#include <fstream>
#include <memory>
#include <sstream>

namespace strata::tools::nbd_tool {

namespace {

struct Rule {
  std::string match;
  bool allow = false;
  bool glob = false;
};

struct RuleList {
  std::vector<Rule> rules;
  bool allow = false;  // the policy when no rule matches
};

Result<bool> parse_policy(const nlohmann::json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s == "allow") return true;
  if (s == "deny") return false;
  return Error{EINVAL, "Parameter 'policy' does not accept value '" + s + "'"};
}

Result<Rule> parse_rule(const nlohmann::json& r) {
  if (!r.is_object()) return Error{EINVAL, "Invalid parameter type for 'rules', expected: object"};
  Rule rule;
  for (auto it = r.begin(); it != r.end(); ++it) {
    if (it.key() == "match") {
      rule.match = it->is_string() ? it->get<std::string>() : it->dump();
    } else if (it.key() == "policy") {
      STRATA_TRY_ASSIGN(rule.allow, parse_policy(*it));
    } else if (it.key() == "format") {
      std::string f = it->is_string() ? it->get<std::string>() : it->dump();
      if (f != "exact" && f != "glob") {
        return Error{EINVAL, "Parameter 'format' does not accept value '" + f + "'"};
      }
      rule.glob = f == "glob";
    } else {
      return Error{EINVAL, "Parameter '" + it.key() + "' is unexpected"};
    }
  }
  if (!r.contains("match")) return Error{EINVAL, "Parameter 'match' is missing"};
  if (!r.contains("policy")) return Error{EINVAL, "Parameter 'policy' is missing"};
  return rule;
}

// A QAuthZList's properties: "policy" and "rules".
Result<RuleList> parse_rule_list(const nlohmann::json& props, bool allow_other_keys) {
  RuleList list;
  for (auto it = props.begin(); it != props.end(); ++it) {
    if (it.key() == "policy") {
      STRATA_TRY_ASSIGN(list.allow, parse_policy(*it));
    } else if (it.key() == "rules") {
      if (!it->is_array())
        return Error{EINVAL, "Invalid parameter type for 'rules', expected: array"};
      for (const auto& r : *it) {
        STRATA_TRY_ASSIGN(Rule rule, parse_rule(r));
        list.rules.push_back(std::move(rule));
      }
    } else if (!allow_other_keys) {
      return Error{EINVAL, "Parameter '" + it.key() + "' is unexpected"};
    }
  }
  return list;
}

bool decide(const RuleList& list, const std::string& identity) {
  for (const auto& r : list.rules) {
    bool hit = r.glob ? fnmatch(r.match.c_str(), identity.c_str(), 0) == 0 : r.match == identity;
    if (hit) return r.allow;
  }
  return list.allow;
}

Result<RuleList> load_rule_file(const std::string& filename) {
  std::ifstream in(filename);
  if (!in) return Error{errno, "Unable to read '" + filename + "': " + std::strerror(errno)};
  std::stringstream text;
  text << in.rdbuf();
  auto json = nlohmann::json::parse(text.str(), nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return Error{EINVAL, "Unable to parse '" + filename + "': not a JSON object"};
  }
  return parse_rule_list(json, false);
}

Result<bool> parse_bool(const std::string& key, const std::string& v) {
  if (v == "on" || v == "yes" || v == "true" || v == "y") return true;
  if (v == "off" || v == "no" || v == "false" || v == "n") return false;
  return Error{EINVAL, "Parameter '" + key + "' expects 'on' or 'off'"};
}

Result<void> only_keys(const ObjectSpec& o, std::initializer_list<const char*> keys) {
  for (auto it = o.json.begin(); it != o.json.end(); ++it) {
    bool known = it.key() == "id";
    for (const char* k : keys) known |= it.key() == k;
    if (!known) return Error{EINVAL, "Parameter '" + it.key() + "' is unexpected"};
  }
  return {};
}

}  // namespace

bool is_authz_type(const std::string& type) {
  return type == "authz-simple" || type == "authz-list" || type == "authz-list-file";
}

Result<void> check_authz_object(const ObjectSpec& o) {
  if (o.type == "authz-simple") {
    STRATA_TRY(only_keys(o, {"identity"}));
    if (!o.props.count("identity")) return Error{EINVAL, "Parameter 'identity' is missing"};
    return {};
  }
  if (o.type == "authz-list") {
    STRATA_TRY(only_keys(o, {"policy", "rules"}));
    STRATA_TRY(parse_rule_list(o.json, true));
    return {};
  }
  STRATA_TRY(only_keys(o, {"filename", "refresh"}));
  if (!o.props.count("filename")) return Error{EINVAL, "Parameter 'filename' is missing"};
  if (o.props.count("refresh")) STRATA_TRY(parse_bool("refresh", o.props.at("refresh")));
  STRATA_TRY(load_rule_file(o.props.at("filename")));
  return {};
}

Result<nbd::TlsCreds::Authorizer> make_authorizer(const std::vector<ObjectSpec>& objects,
                                                  const std::string& id) {
  for (const auto& o : objects) {
    if (o.props.at("id") != id) continue;
    if (!is_authz_type(o.type)) {
      return Error{EINVAL, "Object with id '" + id + "' is not an authorization object"};
    }
    STRATA_TRY(check_authz_object(o));
    if (o.type == "authz-simple") {
      std::string identity = o.props.at("identity");
      return nbd::TlsCreds::Authorizer(
          [identity](const std::string& peer) { return peer == identity; });
    }
    if (o.type == "authz-list") {
      STRATA_TRY_ASSIGN(RuleList list, parse_rule_list(o.json, true));
      return nbd::TlsCreds::Authorizer(
          [list](const std::string& peer) { return decide(list, peer); });
    }
    std::string filename = o.props.at("filename");
    bool refresh = true;
    if (o.props.count("refresh")) {
      STRATA_TRY_ASSIGN(refresh, parse_bool("refresh", o.props.at("refresh")));
    }
    STRATA_TRY_ASSIGN(RuleList loaded, load_rule_file(filename));
    auto list = std::make_shared<RuleList>(std::move(loaded));
    // With refresh, each check reads the file as it is now; a file that no
    // longer loads denies everyone until it loads again (as QEMU).
    return nbd::TlsCreds::Authorizer([list, filename, refresh](const std::string& peer) {
      if (!refresh) return decide(*list, peer);
      auto now = load_rule_file(filename);
      return now && decide(*now, peer);
    });
  }
  return Error{ENOENT, "No authorization object with id '" + id + "'"};
}

}  // namespace strata::tools::nbd_tool
