import java.util.ArrayList;
import java.util.List;

/**
 * Daily temperature readings for one weather station, with the summaries a small
 * weather report needs.
 */
public class Temperature {
    private final String station;
    private final List<Double> readings = new ArrayList<>();

    public Temperature(String station) {
        this.station = station;
    }

    /** Record one reading in degrees Celsius. */
    public void record(double celsius) {
        if (celsius < -90 || celsius > 60) {
            throw new IllegalArgumentException("implausible reading: " + celsius);
        }
        readings.add(celsius);
    }

    public double average() {
        if (readings.isEmpty()) {
            return Double.NaN;
        }
        double sum = 0;
        for (double r : readings) {
            sum += r;
        }
        return sum / readings.size();
    }

    public double max() {
        return readings.stream().mapToDouble(Double::doubleValue).max().orElse(Double.NaN);
    }

    public double min() {
        return readings.stream().mapToDouble(Double::doubleValue).min().orElse(Double.NaN);
    }

    static double toFahrenheit(double celsius) {
        return celsius * 9 / 5 + 32;
    }

    @Override
    public String toString() {
        return String.format("%s: avg %.1f C (%.1f F), range %.1f..%.1f C over %d days",
                station, average(), toFahrenheit(average()), min(), max(), readings.size());
    }

    public static void main(String[] args) {
        Temperature t = new Temperature("Harbour Point");
        double[] week = {12.5, 14.0, 9.5, 11.0, 15.5, 16.0, 13.0};
        for (double d : week) {
            t.record(d);
        }
        System.out.println(t);
    }
}
