#include "formats/json_fields.h"

namespace sputnik {

Result<int64_t> json_int(const nlohmann::json& j, const std::string& key, const std::string& file) {
  if (!j.contains(key)) return make_error("{}: field '{}' is missing", file, key);
  if (!j[key].is_number_integer()) {
    return make_error("{}: field '{}' should be an integer, got {}", file, key, j[key].dump());
  }
  return j[key].get<int64_t>();
}
Result<int64_t> json_int_or(const nlohmann::json& j, const std::string& key, int64_t fallback,
                            const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return json_int(j, key, file);
}
Result<double> json_float_or(const nlohmann::json& j, const std::string& key, double fallback,
                             const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number())
    return make_error("{}: field '{}' should be a number, got {}", file, key, j[key].dump());
  return j[key].get<double>();
}
Result<bool> json_bool_or(const nlohmann::json& j, const std::string& key, bool fallback,
                          const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean())
    return make_error("{}: field '{}' should be true or false, got {}", file, key, j[key].dump());
  return j[key].get<bool>();
}
Result<std::string> json_string_or(const nlohmann::json& j, const std::string& key,
                                   const std::string& fallback, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string())
    return make_error("{}: field '{}' should be a string, got {}", file, key, j[key].dump());
  return j[key].get<std::string>();
}

}  // namespace sputnik
