#include "core/tensor.h"

#include <fmt/format.h>

namespace sputnik {

std::string TensorView::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < n_dims; ++i) s += fmt::format(i ? ", {}" : "{}", shape[i]);
  return s + "]";
}

}  // namespace sputnik
