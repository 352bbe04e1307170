// Typed reads of fields in a checkpoint's JSON (config.json, tokenizer_config.json). Errors name
// the file and the field and say what was found. The *_or forms treat absent and null alike.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/result.h"

namespace sputnik {

Result<int64_t> json_int(const nlohmann::json& j, const std::string& key, const std::string& file);
Result<int64_t> json_int_or(const nlohmann::json& j, const std::string& key, int64_t fallback,
                            const std::string& file);
Result<double> json_float_or(const nlohmann::json& j, const std::string& key, double fallback,
                             const std::string& file);
Result<bool> json_bool_or(const nlohmann::json& j, const std::string& key, bool fallback,
                          const std::string& file);
Result<std::string> json_string_or(const nlohmann::json& j, const std::string& key,
                                   const std::string& fallback, const std::string& file);

}  // namespace sputnik
