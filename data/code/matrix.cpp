// A small dense matrix of doubles with the operations needed to solve a linear
// system by Gaussian elimination with partial pivoting.

#include <cmath>
#include <iostream>
#include <stdexcept>
#include <vector>

namespace linalg {

class Matrix {
public:
    Matrix(std::size_t rows, std::size_t cols) : rows_(rows), cols_(cols), data_(rows * cols, 0.0) {}

    double& operator()(std::size_t r, std::size_t c) { return data_[r * cols_ + c]; }
    double operator()(std::size_t r, std::size_t c) const { return data_[r * cols_ + c]; }

    std::size_t rows() const { return rows_; }
    std::size_t cols() const { return cols_; }

    void swap_rows(std::size_t a, std::size_t b) {
        for (std::size_t c = 0; c < cols_; ++c) {
            std::swap((*this)(a, c), (*this)(b, c));
        }
    }

private:
    std::size_t rows_;
    std::size_t cols_;
    std::vector<double> data_;
};

// Solve A x = b in place; A is n x n, b has n entries. Throws when A is singular.
std::vector<double> solve(Matrix a, std::vector<double> b) {
    const std::size_t n = a.rows();
    for (std::size_t col = 0; col < n; ++col) {
        std::size_t pivot = col;
        for (std::size_t r = col + 1; r < n; ++r) {
            if (std::fabs(a(r, col)) > std::fabs(a(pivot, col))) pivot = r;
        }
        if (std::fabs(a(pivot, col)) < 1e-12) throw std::runtime_error("singular matrix");
        a.swap_rows(col, pivot);
        std::swap(b[col], b[pivot]);
        for (std::size_t r = col + 1; r < n; ++r) {
            const double f = a(r, col) / a(col, col);
            for (std::size_t c = col; c < n; ++c) a(r, c) -= f * a(col, c);
            b[r] -= f * b[col];
        }
    }
    std::vector<double> x(n);
    for (std::size_t i = n; i-- > 0;) {
        double s = b[i];
        for (std::size_t c = i + 1; c < n; ++c) s -= a(i, c) * x[c];
        x[i] = s / a(i, i);
    }
    return x;
}

}  // namespace linalg

int main() {
    linalg::Matrix a(3, 3);
    const double values[3][3] = {{2, 1, -1}, {-3, -1, 2}, {-2, 1, 2}};
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) a(r, c) = values[r][c];
    const auto x = linalg::solve(a, {8, -11, -3});
    std::cout << "x = " << x[0] << ", y = " << x[1] << ", z = " << x[2] << "\n";
    return 0;
}
